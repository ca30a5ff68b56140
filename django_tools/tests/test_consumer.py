"""The reliable consumer against the real broker: poison messages, transient failures,
backoff on the broker, batches, interop with a stock django-cqrs master."""

import struct
import time
from unittest import mock

import orjson
import pika
import pytest
from dj_cqrs.constants import SignalType
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.transport.rabbit_mq import RabbitMQTransport
from dj_replica.models import BookReplica
from django.db import OperationalError

from django_tools.connectivity import amqp_channel
from django_tools.replica import consumer as consumer_module
from django_tools.replica import dead_letters
from django_tools.replica.failures import (
    ERROR_CLASS,
    EXHAUSTED,
    PERMANENT,
    UNDECODABLE,
    UNDECODABLE_PROPERTIES,
)
from django_tools.testing import queue_depth, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def dead(rabbitmq_url, topology) -> list:
    with amqp_channel(rabbitmq_url) as channel:
        reports = [letter.report for letter in dead_letters.read(channel, topology)]
    # Read and left: back in the queue once the broker requeued them (a moment after the
    # connection closed, on a quorum queue), so that the next read sees them all again.
    wait_until(
        lambda: queue_depth(rabbitmq_url, topology.dead_letter_queue) >= len(reports),
        what="the dead letters read to be back in their queue",
    )
    return reports


def test_each_poison_message_is_dead_lettered_with_its_reason_while_good_ones_apply(
    consumers, publish, event_payload, instance_data, rabbitmq_url, topology
):
    poison = {
        "not json": b"{definitely not json",
        "json list": b"[1, 2, 3]",
        "missing keys": {"signal_type": "SAVE", "cqrs_id": "book"},
        "unknown cqrs_id": event_payload("SAVE", instance_data(90), cqrs_id="order"),
        "bad decimal": event_payload("SAVE", instance_data(91, price="12,50")),
        "negative copies": event_payload("SAVE", instance_data(92, copies=-1)),
        "missing field": event_payload(
            "SAVE", {k: v for k, v in instance_data(93).items() if k != "title"}
        ),
    }
    publish(event_payload("SAVE", instance_data(1)))
    for body in poison.values():
        publish(body)
        publish(event_payload("SAVE", instance_data(len(poison) + 10)))
    publish(event_payload("SAVE", instance_data(2)))
    consumers.start(workers=1)

    # Counted, not read: a letter read while others are still arriving goes back to the queue
    # behind them, and the order checked below is the order they failed in.
    wait_until(
        lambda: queue_depth(rabbitmq_url, topology.dead_letter_queue) == len(poison),
        what="dead letters",
    )
    wait_until(lambda: BookReplica.objects.filter(pk__in=[1, 2, 17]).count() == 3)
    reports = dead(rabbitmq_url, topology)
    assert [r.dead_reason for r in reports] == [PERMANENT] * len(poison)
    assert all(r.retries == 0 and r.routing_key == "book" for r in reports)
    assert all(r.first_failure and r.last_failure for r in reports)
    classes = [r.error_class.rsplit(".", 1)[1] for r in reports]
    assert classes == [
        "InvalidMessage",
        "InvalidMessage",
        "InvalidMessage",
        "UnknownCqrsId",
        "InvalidData",
        "InvalidData",
        "InvalidData",
    ]
    assert "price" in reports[4].error and "copies" in reports[5].error
    assert "title" in reports[6].error
    assert not BookReplica.objects.filter(pk__in=[90, 91, 92, 93]).exists()
    assert queue_depth(rabbitmq_url, topology.queue) == 0


def test_a_transient_failure_is_retried_after_the_backoff_then_applied(
    consumers, publish, event_payload, instance_data, topology
):
    real_apply = consumer_module.apply_changes
    deliveries: list[float] = []

    def flaky(changes):
        deliveries.append(time.monotonic())
        if len(deliveries) <= 2:
            raise OperationalError("database is locked")
        return real_apply(changes)

    with mock.patch.object(consumer_module, "apply_changes", flaky):
        consumers.start()
        publish(event_payload("SAVE", instance_data(5, title="third time lucky")))
        wait_until(lambda: BookReplica.objects.filter(pk=5).exists(), what="the third delivery")

    assert len(deliveries) == 3
    policy = topology.policy
    first_wait, second_wait = deliveries[1] - deliveries[0], deliveries[2] - deliveries[1]
    # Never early: at least the jittered minimum of each tier. Not lost in a slow queue either.
    assert policy.tier(1) * (1 - policy.jitter) <= first_wait < policy.tier(1) + 1.0
    assert policy.tier(2) * (1 - policy.jitter) <= second_wait < policy.tier(2) + 1.0
    assert consumers.stats("retried") == 2
    print(
        f"\nmeasured retry waits: {first_wait:.3f}s, {second_wait:.3f}s "
        f"(tiers {policy.tier(1)}s, {policy.tier(2)}s, jitter {policy.jitter})"
    )


def test_after_the_last_retry_a_message_is_dead_lettered_with_its_story(
    consumers, publish, event_payload, instance_data, rabbitmq_url, topology
):
    def always_failing(changes):
        raise OperationalError("could not connect to server")

    with mock.patch.object(consumer_module, "apply_changes", always_failing):
        consumers.start()
        publish(event_payload("SAVE", instance_data(6)))
        wait_until(lambda: dead(rabbitmq_url, topology), timeout=15, what="the dead letter")

    (report,) = dead(rabbitmq_url, topology)
    assert report.dead_reason == EXHAUSTED
    assert report.retries == topology.policy.max_retries
    assert report.error_class == "django.db.utils.OperationalError"
    assert report.error == "could not connect to server"
    assert report.routing_key == "book"
    assert report.first_failure < report.last_failure
    assert report.payload["instance_pk"] == 6


def test_one_failing_message_never_drags_its_batch_with_it(
    consumers, publish, event_payload, instance_data, rabbitmq_url, topology
):
    real_apply = consumer_module.apply_changes

    def fails_for_13(changes):
        if any(change.pk == 13 for change in changes):
            raise OperationalError("row 13 is locked")
        return real_apply(changes)

    for pk in range(10, 17):
        publish(event_payload("SAVE", instance_data(pk)))
    with mock.patch.object(consumer_module, "apply_changes", fails_for_13):
        consumers.start(batch_size=50)
        wait_until(lambda: BookReplica.objects.count() == 6, what="the six good rows")
        wait_until(lambda: dead(rabbitmq_url, topology), timeout=15, what="13's dead letter")
    assert sorted(BookReplica.objects.values_list("pk", flat=True)) == [10, 11, 12, 14, 15, 16]
    assert [r.payload["instance_pk"] for r in dead(rabbitmq_url, topology)] == [13]


def test_a_stock_django_cqrs_master_is_followed(consumers, instance_data, settings, topology):
    """Messages exactly as dj_cqrs.transport.RabbitMQTransport publishes them: no headers,
    decimals as JSON numbers, syncs on the replica's own routing key."""
    consumers.start()

    def produce(signal_type, data, queue=None):
        RabbitMQTransport.produce(
            TransportPayload(signal_type, "book", data, data["id"], queue=queue)
        )

    produce(SignalType.SAVE, instance_data(20, 0, price=19.9))
    produce(SignalType.SAVE, instance_data(21, 0))
    produce(SignalType.SAVE, instance_data(20, 1, price=21.5, title="updated"))
    produce(SignalType.DELETE, {"id": 21, "cqrs_revision": 1, "cqrs_updated": "2026-01-01"})
    produce(SignalType.SYNC, instance_data(22, 4, title="synced"), queue=topology.queue)
    wait_until(
        lambda: set(BookReplica.objects.values_list("pk", "cqrs_revision")) == {(20, 1), (22, 4)},
        what="the stock master's changes",
    )
    row = BookReplica.objects.get(pk=20)
    assert (str(row.price), row.title) == ("21.50", "updated")


def test_messages_are_acknowledged_only_once_applied(
    consumers, publish, event_payload, instance_data, rabbitmq_url, topology
):
    for pk in range(30, 40):
        publish(event_payload("SAVE", instance_data(pk)))
    consumers.start(batch_size=4)
    wait_until(lambda: BookReplica.objects.count() == 10)
    with amqp_channel(rabbitmq_url) as channel:
        declared = channel.queue_declare(topology.queue, passive=True).method
    assert declared.message_count == 0
    assert consumers.stats("applied") == 10


def test_headers_of_a_failed_message_name_the_error_class(
    consumers, publish, rabbitmq_url, topology
):
    publish(b"nope")
    consumers.start()
    wait_until(lambda: dead(rabbitmq_url, topology))
    with amqp_channel(rabbitmq_url) as channel:
        _, properties, body = channel.basic_get(topology.dead_letter_queue, auto_ack=True)
    assert body == b"nope"  # the body is kept as it was
    assert properties.headers[ERROR_CLASS] == "django_tools.replica.messages.InvalidMessage"
    assert properties.delivery_mode == 2


def test_after_its_queue_is_deleted_the_consumer_declares_it_again_and_goes_on(
    consumers, publish, event_payload, instance_data, rabbitmq_url, topology
):
    """A broker-side cancel (queue deleted, operator, failover) ended pika's consume generator
    and the StopIteration killed the consumer: no later write was ever applied."""
    consumers.start()
    publish(event_payload("SAVE", instance_data(50)))
    wait_until(lambda: BookReplica.objects.filter(pk=50).exists(), what="the first save")

    with amqp_channel(rabbitmq_url) as channel:
        channel.queue_delete(topology.queue)

    def queue_is_back_and_consumed() -> bool:
        with amqp_channel(rabbitmq_url) as channel:
            try:
                return channel.queue_declare(topology.queue, passive=True).method.consumer_count
            except Exception:
                return False

    wait_until(queue_is_back_and_consumed, what="the queue declared and consumed again")
    for pk in range(51, 61):
        publish(event_payload("SAVE", instance_data(pk)))  # bound again: routed, not returned
    wait_until(lambda: BookReplica.objects.count() == 11, what="the saves after the cancel")
    assert all(thread.is_alive() for thread in consumers.threads)
    assert not consumers.errors
    assert queue_depth(rabbitmq_url, topology.queue) == 0


class RawProperties(pika.BasicProperties):
    """Properties sent exactly as encoded here: what another client may put on the wire."""

    def __init__(self, encoded: bytes) -> None:
        super().__init__()
        self.encoded = encoded

    def encode(self):
        return [self.encoded]


def _table(entries: bytes) -> bytes:
    return struct.pack(">I", len(entries)) + entries


def _entry(key: bytes, kind: bytes, value: bytes) -> bytes:
    return bytes([len(key)]) + key + kind + value


def _headers_then_persistent(table: bytes) -> bytes:
    flags = pika.spec.BasicProperties.FLAG_HEADERS | pika.spec.BasicProperties.FLAG_DELIVERY_MODE
    return struct.pack(">H", flags) + table + bytes([2])


def _deeply_nested(depth: int) -> bytes:
    table = _table(b"")
    for _ in range(depth):
        table = _table(_entry(b"n", b"F", table))
    return table


UNDECODABLE_HEADERS = {
    # a timestamp header in milliseconds: year 57,000, which datetime cannot hold
    "timestamp in ms": _table(_entry(b"sent_at", b"T", struct.pack(">Q", 1_764_000_000_000))),
    "timestamp out of range": _table(_entry(b"at", b"T", struct.pack(">Q", 2**63 - 1))),
    "nested deeper than the recursion limit": _deeply_nested(3000),
}


def test_messages_whose_headers_pika_cannot_decode_are_dead_lettered_with_their_body(
    consumers, event_payload, instance_data, rabbitmq_url, topology, cqrs_exchange
):
    """pika decodes headers while reading the frame: a header it cannot decode used to drop
    the connection, and the same message came first again for ever, blocking the queue."""
    bodies = {}
    with amqp_channel(rabbitmq_url) as channel:
        channel.confirm_delivery()
        for n, (name, table) in enumerate(UNDECODABLE_HEADERS.items()):
            body = orjson.dumps(event_payload("SAVE", instance_data(70 + n, title=name)))
            bodies[name] = body
            channel.basic_publish(
                cqrs_exchange, "book", body, RawProperties(_headers_then_persistent(table))
            )
            channel.basic_publish(
                cqrs_exchange,
                "book",
                orjson.dumps(event_payload("SAVE", instance_data(80 + n))),
                pika.BasicProperties(delivery_mode=2),
            )
    consumers.start()
    wait_until(lambda: BookReplica.objects.filter(pk__in=[80, 81, 82]).count() == 3)
    wait_until(  # counted, not read: reading them now could reorder them (see above)
        lambda: queue_depth(rabbitmq_url, topology.dead_letter_queue) == 3,
        what="three dead letters",
    )
    with amqp_channel(rabbitmq_url) as channel:
        letters = list(dead_letters.read(channel, topology))
    assert [letter.report.dead_reason for letter in letters] == [UNDECODABLE] * 3
    assert [letter.body for letter in letters] == list(bodies.values())  # the original bytes
    assert all(letter.report.error_class.endswith("UndecodableMessage") for letter in letters)
    assert "year" in letters[0].report.error or "range" in letters[0].report.error
    assert all(letter.properties.headers[UNDECODABLE_PROPERTIES] for letter in letters)
    assert not BookReplica.objects.filter(pk__in=[70, 71, 72]).exists()
    assert queue_depth(rabbitmq_url, topology.queue) == 0
    assert not consumers.errors


def test_messages_applied_one_by_one_are_acknowledged_together(
    consumers, publish, event_payload, instance_data, rabbitmq_url, topology
):
    """At low load each message is a batch of one: their acks go out `ACK_EVERY` at a time (one
    `multiple` ack), and the rest once the queue is quiet for `IDLE_ACK`."""
    from pika.adapters.blocking_connection import BlockingChannel

    acks: list[tuple[int, bool]] = []
    real_ack = BlockingChannel.basic_ack

    def record(channel, delivery_tag=0, multiple=False):
        acks.append((delivery_tag, multiple))
        return real_ack(channel, delivery_tag, multiple)

    for pk in range(50, 55):
        publish(event_payload("SAVE", instance_data(pk)))
    with (
        mock.patch.object(consumer_module, "ACK_EVERY", 3),
        mock.patch.object(consumer_module, "IDLE_ACK", 0.2),
        mock.patch.object(BlockingChannel, "basic_ack", record),
    ):
        consumers.start(batch_size=1)
        wait_until(lambda: BookReplica.objects.count() == 5, what="five messages applied")
        wait_until(lambda: len(acks) == 2, what="the quiet queue's acknowledgement")
        consumers.stop_all()
    assert acks == [(3, True), (5, True)]
    assert consumers.stats("applied") == 5
    assert queue_depth(rabbitmq_url, topology.queue) == 0  # acknowledged, not given back
