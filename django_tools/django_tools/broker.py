"""The replica's broker topology, declared once in one place.

django-cqrs's consumer declares the same things when it starts; declaring them ahead of time
(`manage.py cqrs_declare`, run by `apis up` before the APIs accept writes) means no event is
dropped by the exchange for lack of a bound queue while the consumer is still starting.
"""

from __future__ import annotations

import pika
from dj_cqrs.registries import ReplicaRegistry
from django.conf import settings


def exchange_name() -> str:
    return settings.CQRS.get("exchange", "cqrs")


def replica_queues() -> tuple[str, str]:
    """(queue, dead-letter queue) of this replica, named as django-cqrs names them."""
    queue = settings.CQRS["queue"]
    dead_letters = (
        settings.CQRS.get("replica", {}).get("dead_letter_queue") or f"dead_letter_{queue}"
    )
    return queue, dead_letters


def declare_topology(channel: pika.adapters.blocking_connection.BlockingChannel) -> list[str]:
    """Declare the exchange and, on a replica, its queues and bindings. Returns what was
    declared, for the command's output."""
    exchange = exchange_name()
    channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
    declared = [f"exchange {exchange}"]
    if not ReplicaRegistry.models or "queue" not in settings.CQRS:
        return declared
    queue, dead_letters = replica_queues()
    channel.queue_declare(queue, durable=True, exclusive=False)
    channel.queue_declare(dead_letters, durable=True, exclusive=False)
    for cqrs_id in ReplicaRegistry.models:
        for target, routing_key in (
            (queue, cqrs_id),
            (queue, f"cqrs.{queue}.{cqrs_id}"),  # direct syncs and requeues
            (dead_letters, f"cqrs.{dead_letters}.{cqrs_id}"),
        ):
            channel.queue_bind(exchange=exchange, queue=target, routing_key=routing_key)
            declared.append(f"{target} <- {routing_key}")
    return declared
