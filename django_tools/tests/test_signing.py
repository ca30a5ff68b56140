"""Optional HMAC signatures on events (CQRS_SIGNING_KEY): unset, nothing changes (a stock
django-cqrs master is followed); set, an unsigned or badly signed event is dead-lettered with
reason `unauthenticated`, in cqrs mode (the consumer) and celery mode (the apply task)."""

import orjson
import pytest
from dj_replica.models import BookReplica

from django_tools import signing
from django_tools.connectivity import amqp_channel
from django_tools.replica import dead_letters
from django_tools.replica.failures import UNAUTHENTICATED, SetAside, classify
from django_tools.replica.tasks import apply_event
from django_tools.testing import RunningRelay, queue_depth, wait_until

KEY, OLD, OTHER = "k-new-0123456789abcdef", "k-old-0123456789abcdef", "k-not-ours-0123456789"


def test_unset_nothing_is_signed_nor_checked(settings):
    settings.CQRS_SIGNING_KEYS = ()
    assert signing.signed_headers(b"{}", None) is None
    assert signing.signed_headers(b"{}", {"a": 1}) == {"a": 1}
    signing.verify(b"{}", None)  # no key: nothing to check


def test_signed_with_the_first_key_accepted_with_any(settings):
    settings.CQRS_SIGNING_KEYS = (KEY,)
    headers = signing.signed_headers(b'{"x": 1}', {"trace": "t"})
    assert headers["trace"] == "t" and headers[signing.HEADER].startswith("sha256=")
    signing.verify(b'{"x": 1}', headers)
    # Rotation: the new key first signs; events still signed with the old one pass meanwhile.
    settings.CQRS_SIGNING_KEYS = (OLD,)
    by_old = signing.signed_headers(b"{}", None)
    settings.CQRS_SIGNING_KEYS = (KEY, OLD)
    signing.verify(b"{}", by_old)
    signing.verify(b"{}", {signing.HEADER: by_old[signing.HEADER].encode()})  # bytes, from pika
    for headers in (None, {}, {signing.HEADER: ""}, signing_with(OTHER, b"{}")):
        with pytest.raises(signing.Unauthenticated):
            signing.verify(b"{}", headers)
    with pytest.raises(signing.Unauthenticated):  # the body changed after signing
        signing.verify(b'{"x": 2}', signing_with(KEY, b'{"x": 1}'))


def signing_with(key: str, body: bytes) -> dict:
    return {signing.HEADER: signing.signature(body, key.encode())}


def test_an_unauthenticated_event_is_a_dead_letter_of_its_own_reason(topology):
    decision = classify(signing.Unauthenticated("unsigned"), 0, topology.policy, validating=True)
    assert decision == SetAside(UNAUTHENTICATED)


@pytest.mark.django_db(transaction=True)
def test_the_consumer_dead_letters_unsigned_and_forged_events_and_applies_signed_ones(
    consumers, publish, event_payload, instance_data, rabbitmq_url, topology, settings
):
    """Anyone who could publish to the exchange wrote any row to the replica; with a signing
    key, only the master's events apply."""
    settings.CQRS_SIGNING_KEYS = (KEY,)
    good = orjson.dumps(event_payload("SAVE", instance_data(1)))
    publish(good, headers=signing_with(KEY, good))
    publish(event_payload("SAVE", instance_data(2, 10**9)))  # unsigned: a huge revision
    forged = orjson.dumps(event_payload("SAVE", instance_data(3)))
    publish(forged, headers=signing_with(OTHER, forged))
    consumers.start()
    wait_until(lambda: queue_depth(rabbitmq_url, topology.dead_letter_queue) == 2)
    assert set(BookReplica.objects.values_list("pk", flat=True)) == {1}
    with amqp_channel(rabbitmq_url) as channel:
        reports = [letter.report for letter in dead_letters.read(channel, topology)]
    assert {r.dead_reason for r in reports} == {UNAUTHENTICATED}
    assert {r.payload["instance_pk"] for r in reports} == {2, 3}


@pytest.mark.django_db(transaction=True)
def test_the_celery_apply_task_checks_the_signature_too(
    event_payload, instance_data, rabbitmq_url, topology, settings
):
    settings.CQRS_SIGNING_KEYS = (KEY,)
    body = orjson.dumps(event_payload("SAVE", instance_data(5))).decode()
    headers = signing_with(KEY, body.encode())
    assert apply_event.apply(args=[body], headers=headers).get() == "applied"
    unsigned = orjson.dumps(event_payload("SAVE", instance_data(6))).decode()
    assert apply_event.apply(args=[unsigned]).get() == "dead_lettered"
    wait_until(lambda: queue_depth(rabbitmq_url, topology.dead_letter_queue) == 1)
    with amqp_channel(rabbitmq_url) as channel:
        (letter,) = list(dead_letters.read(channel, topology))
    assert letter.report.dead_reason == UNAUTHENTICATED
    assert not BookReplica.objects.filter(pk=6).exists()


@pytest.mark.django_db(transaction=True)
def test_the_relay_signs_what_it_publishes(settings, rabbitmq_url, cqrs_exchange, listening_queue):
    from decimal import Decimal

    from dj_master.models import Book

    from django_tools.outbox.relays.amqp import AmqpRelay

    settings.CQRS_SIGNING_KEYS = (KEY, OLD)
    queue = listening_queue.bind("book")
    Book.objects.create(isbn="S-1", title="Signed", price=Decimal("1.00"))
    running = RunningRelay(AmqpRelay(rabbitmq_url, cqrs_exchange))

    def received():
        method, properties, body = queue.channel.basic_get(queue.name, auto_ack=True)
        return (properties, body) if method is not None else None

    try:
        properties, body = wait_until(received, 10, what="the relay's event")
    finally:
        running.stop()
    assert properties.headers[signing.HEADER] == signing.signature(body, KEY.encode())
    signing.verify(body, properties.headers)


def test_a_replayed_dead_letter_keeps_its_signature(settings):
    """`cqrs_dead_letters retry` (and the page's retry) sends a copy with fresh properties: our
    failure headers go, the master's signature stays, or a replayed event would die again."""
    from pika import BasicProperties

    from django_tools.replica.failures import DEAD_REASON, fresh_properties

    settings.CQRS_SIGNING_KEYS = (KEY,)
    body = b'{"x": 1}'
    letter = BasicProperties(headers={**signing_with(KEY, body), DEAD_REASON: "permanent"})
    replayed = fresh_properties(letter)
    assert DEAD_REASON not in replayed.headers
    signing.verify(body, replayed.headers)
