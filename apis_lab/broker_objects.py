"""A run's exchange and queues on the broker: their names (`replica_queues`) and their deletion
afterwards (`delete_broker_objects`); used by the end-to-end tests and the benchmark."""

from __future__ import annotations

from django_tools.broker import blocking_connection
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
