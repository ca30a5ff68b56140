"""The feed's Redis cache: hits, never stale after an applied change, and a dead Redis is only
slower, not an error."""

import time

import pytest
from dj_cqrs.constants import SignalType
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from django_tools.replica import apply
from django_tools.replica import messages as events
from django_tools.replica.models import ReplicaState
from feed.models import ProdutoMirror

pytestmark = pytest.mark.django_db(transaction=True)


def apply_event(signal_type, data):
    """What the consumer does with one message, transaction and all."""
    with transaction.atomic():
        event = events.Event("produto", signal_type, data["id"], data["cqrs_revision"], data)
        apply.apply_changes([apply.prepare(event)])


def test_a_repeated_read_is_answered_from_redis(client, instance_data, redis_url):
    apply_event(SignalType.SAVE, instance_data(1, 0))
    client.get("/api/feed/1")
    client.get("/api/feed/?ordering=nome")
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/api/feed/1").json()["id"] == 1
        assert client.get("/api/feed/?ordering=nome").json()["count"] == 1
    # Only the replica-version lookup reaches the database.
    assert [q["sql"] for q in queries if "feed_produtomirror" in q["sql"]] == []


def test_once_an_update_is_applied_the_old_version_is_never_served(
    client, instance_data, redis_url
):
    apply_event(SignalType.SAVE, instance_data(1, 0, nome="antes"))
    assert client.get("/api/feed/1").json()["nome"] == "antes"
    assert client.get("/api/feed/").json()["items"][0]["nome"] == "antes"
    apply_event(SignalType.SAVE, instance_data(1, 1, nome="depois"))
    assert client.get("/api/feed/1").json()["nome"] == "depois"
    assert client.get("/api/feed/").json()["items"][0]["nome"] == "depois"
    apply_event(SignalType.DELETE, {"id": 1, "cqrs_revision": 2, "cqrs_updated": "x"})
    assert client.get("/api/feed/1").status_code == 404
    assert client.get("/api/feed/").json()["count"] == 0


def test_a_stopped_redis_does_not_break_the_feed(client, instance_data, settings):
    apply_event(SignalType.SAVE, instance_data(1, 0))
    default = settings.CACHES["default"]
    settings.CACHES = {"default": {**default, "LOCATION": "redis://127.0.0.1:1/0"}}
    started = time.monotonic()
    for _ in range(20):
        assert client.get("/api/feed/1").status_code == 200
        assert client.get("/api/feed/").json()["count"] == 1
    elapsed = time.monotonic() - started
    assert elapsed < 3, f"40 requests took {elapsed:.1f}s with Redis down"


def test_before_any_applied_change_nothing_is_cached(client, instance_data, redis_url):
    """A database with no replica state has no incarnation to key on: a shared placeholder key
    once served one lab's rows to a newer, empty database (the consumer committed its first
    change between the request's version read and its rows read)."""
    apply_event(SignalType.SAVE, instance_data(1, 0, nome="antes"))
    ReplicaState.objects.all().delete()
    assert client.get("/api/feed/1").json()["nome"] == "antes"
    assert client.get("/api/feed/").json()["items"][0]["nome"] == "antes"
    ProdutoMirror.objects.filter(pk=1).update(nome="depois")
    assert client.get("/api/feed/1").json()["nome"] == "depois"
    assert client.get("/api/feed/").json()["items"][0]["nome"] == "depois"
