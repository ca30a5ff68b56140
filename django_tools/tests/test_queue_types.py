"""Queue types against the real broker: quorum for a new replica, an existing deployment kept as
it is, a configured type that contradicts the broker refused with the way out, and the move of a
whole replica from classic to quorum (and back) without losing a message."""

import uuid

import pika
import pytest

from django_tools.connectivity import amqp_channel
from django_tools.replica.policy import RetryPolicy
from django_tools.replica.queue_migration import MigrationRefused, migrate
from django_tools.replica.topology import CLASSIC, QUORUM, QueueTypeMismatch, Topology
from django_tools.testing import wait_until

POLICY = RetryPolicy(base=1, factor=2, cap=4, max_retries=3, jitter=0)


@pytest.fixture
def names(rabbitmq_url):
    queue, exchange = f"test_qt_{uuid.uuid4().hex[:8]}", f"test_qt_x_{uuid.uuid4().hex[:8]}"
    yield queue, exchange
    topology = Topology.named(queue, POLICY, exchange=exchange)
    with amqp_channel(rabbitmq_url) as channel:
        for name in [*topology.queues(), *(f"{q}.migrating" for q in topology.queues())]:
            channel.queue_delete(name)
        channel.exchange_delete(exchange)


def topology(names, queue_type=None) -> Topology:
    queue, exchange = names
    return Topology.named(
        queue, POLICY, exchange=exchange, cqrs_ids=("item",), queue_type=queue_type
    )


def types(channel, t: Topology) -> set[str]:
    return {t.existing_type(channel, queue) for queue in t.queues()}


def test_a_new_replica_gets_quorum_queues_and_an_existing_one_keeps_its_type(rabbitmq_url, names):
    with amqp_channel(rabbitmq_url) as channel:
        lines = topology(names).declare(channel)
        assert types(channel, topology(names)) == {QUORUM}
        assert any("(quorum, retries wait 1s" in line for line in lines)
    other = (names[0] + "_c", names[1])
    try:
        with amqp_channel(rabbitmq_url) as channel:
            topology(other, CLASSIC).declare(channel)
            topology(other).declare(channel)  # unset: what the broker has
            assert types(channel, topology(other)) == {CLASSIC}
    finally:
        with amqp_channel(rabbitmq_url) as channel:
            for queue in topology(other).queues():
                channel.queue_delete(queue)


def test_a_type_that_contradicts_the_broker_is_refused_with_the_way_out(rabbitmq_url, names):
    with amqp_channel(rabbitmq_url) as channel:
        topology(names, CLASSIC).declare(channel)
        with pytest.raises(QueueTypeMismatch) as refused:
            topology(names, QUORUM).declare(channel)
    message = str(refused.value)
    assert f"queue {names[0]} exists as a classic queue, but CQRS_QUEUE_TYPE=quorum" in message
    assert "cqrs_queues migrate --to quorum" in message


def test_moving_a_replica_to_quorum_and_back_loses_nothing(rabbitmq_url, names):
    classic = topology(names, CLASSIC)
    with amqp_channel(rabbitmq_url) as channel:
        channel.confirm_delivery()
        classic.declare(channel)
        persistent = pika.BasicProperties(delivery_mode=2)
        for n in range(5):
            channel.basic_publish(names[1], "item", f"event {n}".encode(), persistent, True)
        for n in range(2):
            channel.basic_publish(
                "", classic.dead_letter_queue, f"dead {n}".encode(), persistent, True
            )
        channel.basic_publish(
            "", classic.retry_queue(4), b"retry", mandatory=True,
            properties=pika.BasicProperties(delivery_mode=2, expiration="60000"),
        )  # fmt: skip

    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        said = []
        assert migrate(connection, classic, QUORUM, say=said.append) == 8
        channel = connection.channel()
        assert types(channel, topology(names)) == {QUORUM}
        depths = {
            q: channel.queue_declare(q, passive=True).method.message_count
            for q in topology(names).queues()
        }
        assert depths[names[0]] == 5 and depths[classic.dead_letter_queue] == 2
        assert depths[classic.retry_queue(4)] == 1
        # Bound again: a new event lands in the quorum queue.
        channel.confirm_delivery()
        channel.basic_publish(names[1], "item", b"after", pika.BasicProperties(delivery_mode=2),
                              mandatory=True)  # fmt: skip
        wait_until(lambda: channel.queue_declare(names[0], passive=True).method.message_count == 6)
        bodies = []
        while (message := channel.basic_get(names[0], auto_ack=True))[0] is not None:
            bodies.append(message[2])
        assert bodies == [f"event {n}".encode() for n in range(5)] + [b"after"]

        # And back to classic, with a consumer attached first: refused, nothing touched.
        consumer = connection.channel()
        consumer.basic_consume(names[0], lambda *_: None)
        with pytest.raises(MigrationRefused, match="stop the replica's consumers"):
            migrate(connection, topology(names), CLASSIC)
        consumer.close()
        assert migrate(connection, topology(names), CLASSIC) == 3
        assert types(connection.channel(), topology(names)) == {CLASSIC}
    finally:
        connection.close()


def test_quorum_queues_of_before_the_delivery_limits_keep_working_until_migrated(
    rabbitmq_url, names
):
    """A deployment whose quorum queues were declared without delivery limits: RabbitMQ refuses
    a declare with other arguments (406), so they are used as they are, with the way out in
    the declare's lines; `migrate --to quorum` declares them again with the limits, keeping
    their messages."""
    current = topology(names, QUORUM)
    with amqp_channel(rabbitmq_url) as channel:
        channel.exchange_declare(names[1], exchange_type="topic", durable=True)
        for queue in current.queues():  # as the version before the limits declared them
            channel.queue_declare(
                queue, durable=True, arguments=current.arguments(queue, QUORUM, limited=False)
            )
        channel.queue_bind(names[0], names[1], routing_key="item")
        channel.confirm_delivery()
        persistent = pika.BasicProperties(delivery_mode=2)
        for n in range(3):
            channel.basic_publish(names[1], "item", f"event {n}".encode(), persistent, True)

    with amqp_channel(rabbitmq_url) as channel:
        lines = topology(names).declare(channel)  # type unset: what the broker has
        assert any(f"queue {names[0]} (quorum, no delivery limit" in line for line in lines)
        assert types(channel, current) == {QUORUM}
        assert not current.up_to_date(channel.connection, names[0], QUORUM)
        current.declare(channel)  # CQRS_QUEUE_TYPE=quorum: no mismatch either

    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        assert migrate(connection, current, QUORUM) == 3
        channel = connection.channel()
        assert all(current.up_to_date(connection, q, QUORUM) for q in current.queues())
        assert channel.queue_declare(names[0], passive=True).method.message_count == 3
        lines = current.declare(channel)
        assert any(f"queue {names[0]} (quorum, delivery limit 20)" in line for line in lines)
    finally:
        connection.close()
