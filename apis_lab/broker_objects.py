"""A run's exchange and queues on the broker: their names (`replica_queues`), their deletion
afterwards (`delete_broker_objects`), and the type the broker gives a queue declared without one
(`untyped_queue_type`); used by the end-to-end tests and the benchmark."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

from pika.exceptions import ChannelClosedByBroker

from django_tools.broker import blocking_connection
from django_tools.env import CLASSIC, QUORUM
from django_tools.replica.policy import RetryPolicy
from django_tools.replica.topology import Topology


def replica_queues(queue: str, policy: RetryPolicy | None = None) -> list[str]:
    """A replica's queue, dead-letter queue and retry queues (to delete them afterwards), as its
    topology names them."""
    return Topology.named(queue, policy or RetryPolicy()).queues()


def delete_broker_objects(rabbitmq_url: str, exchange: str, queues: list[str]) -> None:
    """The queues, the exchange, and the exchange Celery declares beside each of its queues
    (named like the queue; deleting one that does not exist is fine)."""
    connection = blocking_connection(rabbitmq_url)
    try:
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue)
            channel.exchange_delete(queue)
        channel.exchange_delete(exchange)
    finally:
        connection.close()


def untyped_queue_type(rabbitmq_url: str) -> str:
    """The type of a queue declared without `x-queue-type` on the broker's default vhost "/",
    as stock django-cqrs declares its own (it connects to "/" whatever vhost its URL names): the
    vhost's default queue type, `classic` unless the vhost was created with another.

    Asked the only way AMQP allows: a durable probe queue declared without a type, then declared
    again with each type until one is equivalent (406 PRECONDITION_FAILED otherwise); deleted."""
    url = urlsplit(rabbitmq_url)._replace(path="/").geturl()
    name = f"apis-lab-type-probe-{uuid.uuid4().hex[:8]}"
    connection = blocking_connection(url)
    try:
        connection.channel().queue_declare(name, durable=True)
        try:
            for kind in (CLASSIC, QUORUM, "stream"):
                try:  # a refusal closes the channel: one channel per attempt
                    connection.channel().queue_declare(
                        name, durable=True, arguments={"x-queue-type": kind}
                    )
                except ChannelClosedByBroker as exc:
                    if exc.reply_code != 406:
                        raise
                    continue
                return kind
            return "unknown"
        finally:
            connection.channel().queue_delete(name)
    finally:
        connection.close()
