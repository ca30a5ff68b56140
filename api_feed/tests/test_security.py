"""The feed as an attacker on the network sees it: its cache in Redis and its status page."""

import logging
import pickle

import pytest
import redis
from dj_cqrs.constants import SignalType
from django.db import transaction

from django_tools.replica import apply
from django_tools.replica import messages as events

pytestmark = pytest.mark.django_db(transaction=True)


def apply_event(signal_type, data):
    with transaction.atomic():
        event = events.Event("produto", signal_type, data["id"], data["cqrs_revision"], data)
        apply.apply_changes([apply.prepare(event)])


class _Payload:
    """A pickle that creates a file when unpickled: code execution, as `id` was in the issue."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _list_keys(client: redis.Redis) -> list[bytes]:
    """The feed's list entries of this test (conftest gives each test a KEY_PREFIX of its own)."""
    from django.conf import settings

    prefix = settings.CACHES["default"]["KEY_PREFIX"]
    return list(client.scan_iter(f"{prefix}:*:feed:list:*"))


def test_a_pickle_planted_in_redis_is_never_executed(
    client, instance_data, redis_url, tmp_path, caplog
):
    """Django's RedisCache unpickled whatever was under a `feed:list:` key: whoever could write
    to Redis ran code in the feed. Now the value is JSON, and anything else is a miss."""
    apply_event(SignalType.SAVE, instance_data(1, 0, nome="real"))
    redis_client = redis.Redis.from_url(redis_url)
    for key in _list_keys(redis_client):
        redis_client.delete(key)
    first = client.get("/api/feed/")
    assert first.status_code == 200
    (key,) = _list_keys(redis_client)

    marker = tmp_path / "pwned"
    redis_client.set(key, pickle.dumps(_Payload(str(marker))), ex=60)
    with caplog.at_level(logging.WARNING, logger="feed.cache"):
        again = client.get("/api/feed/")
    assert not marker.exists(), "the planted pickle ran in the feed"
    assert again.status_code == 200 and again.json() == first.json()
    assert any("unreadable value" in r.getMessage() for r in caplog.records)
    # The miss was answered from the database and cached again, as JSON.
    assert redis_client.get(key).startswith(b"{")


def test_an_entry_larger_than_the_limit_is_not_stored(client, instance_data, redis_url, settings):
    apply_event(SignalType.SAVE, instance_data(1, 0))
    redis_client = redis.Redis.from_url(redis_url)
    for key in _list_keys(redis_client):
        redis_client.delete(key)
    settings.FEED_CACHE_MAX_ENTRY_BYTES = 100
    assert client.get("/api/feed/").json()["count"] == 1
    assert _list_keys(redis_client) == []
    settings.FEED_CACHE_MAX_ENTRY_BYTES = 1024 * 1024
    assert client.get("/api/feed/").json()["count"] == 1
    assert len(_list_keys(redis_client)) == 1


def test_distinct_queries_past_the_byte_budget_are_not_stored(
    client, instance_data, redis_url, settings, caplog, monkeypatch
):
    """Every distinct query was cached for 60 s: a flood of them (anyone can make them) filled
    Redis. Now what the feed writes per FEED_CACHE_TTL is bounded, keys included."""
    from feed import cache as feed_cache

    apply_event(SignalType.SAVE, instance_data(1, 0))
    redis_client = redis.Redis.from_url(redis_url)
    one = client.get("/api/feed/?q=probe-0")
    entry = len(one.content) + feed_cache.KEY_COST_BYTES
    for key in _list_keys(redis_client):
        redis_client.delete(key)
    settings.FEED_CACHE_MAX_BYTES = 3 * entry + entry // 2  # room for three entries
    settings.FEED_CACHE_TTL = 3600  # the budget's window: no boundary crossed during the test
    monkeypatch.setattr(feed_cache, "_spent_window", -1)
    with caplog.at_level(logging.WARNING, logger="feed.cache"):
        for number in range(1, 21):
            response = client.get(f"/api/feed/?q=probe-{number}")
            assert response.status_code == 200 and response.json()["count"] == 0
    stored = _list_keys(redis_client)
    assert 1 <= len(stored) <= 3, len(stored)
    assert sum(redis_client.strlen(key) + feed_cache.KEY_COST_BYTES for key in stored) <= (
        settings.FEED_CACHE_MAX_BYTES
    )
    spent = [r for r in caplog.records if "FEED_CACHE_MAX_BYTES" in r.getMessage()]
    assert len(spent) == 1, "one warning per window, not one per request"
    # A query already stored is still served from the cache.
    assert client.get("/api/feed/?q=probe-1").json() == client.get("/api/feed/?q=probe-1").json()
    prefix = settings.CACHES["default"]["KEY_PREFIX"]
    counters = list(redis_client.scan_iter(f"{prefix}:*:feed:budget:*"))  # this window's, and
    # the first request's (60 s windows): each gone one window after its own
    assert any(3600 < redis_client.ttl(counter) <= 7201 for counter in counters)
    redis_client.delete(*counters)


def test_the_cache_refuses_to_pickle_anything():
    from django.core.cache import cache

    with pytest.raises(TypeError, match="JSON bytes"):
        cache.set("feed:test:object", {"a": 1})


@pytest.mark.parametrize("password", ["ab/Sup3rS3cret", "Sup3rS3cret?x", "a?b#Sup3rS3cret"])
def test_the_replication_status_and_metrics_never_answer_500_nor_show_the_password(
    client, settings, password
):
    """An unparsable RABBITMQ_URL made /api/replication/status answer 500 and log the
    password's fragment."""
    settings.CQRS = {**settings.CQRS, "url": f"amqp://admin:{password}@127.0.0.1:5672/"}
    response = client.get("/api/replication/status")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["broker"]["reachable"] is False
    text = response.content.decode()
    assert "Sup3rS3cret" not in text and "'ab'" not in text and "'a'" not in text, text
    # The metrics' scrape reads the same broker view: no 500, and no label carries an error.
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    scraped = metrics.content.decode()
    assert "cqrs_broker_up 0.0" in scraped and "Sup3rS3cret" not in scraped
