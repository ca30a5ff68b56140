"""Reading, replaying and purging the replica's dead-letter queue.

Messages are read with `basic_get` and left unacknowledged unless acted on; closing the channel
gives the rest back to the queue in their places, so `dump` changes nothing and a filtered
`retry`/`purge` touches only what matched.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from django_tools.replica.failures import FailureReport, fresh_properties
from django_tools.replica.topology import Topology


@dataclass(frozen=True)
class DeadLetter:
    tag: int
    routing_key: str
    properties: pika.BasicProperties
    body: bytes
    report: FailureReport


def count(channel: BlockingChannel, topology: Topology) -> int:
    return channel.queue_declare(topology.dead_letter_queue, passive=True).method.message_count


def wait_for_depth(
    connection: BlockingConnection, topology: Topology, expected: int, timeout: float = 10.0
) -> bool:
    """Wait (bounded) until the dead-letter queue holds `expected` letters again."""
    deadline = time.monotonic() + timeout
    channel = connection.channel()
    while count(channel, topology) < expected:
        if time.monotonic() > deadline:
            return False
        connection.sleep(0.05)
    return True


def read(
    channel: BlockingChannel,
    topology: Topology,
    *,
    cqrs_id: str | None = None,
    limit: int | None = None,
) -> Iterator[DeadLetter]:
    """The dead letters that match, oldest first, each unacknowledged until acted on."""
    matched = 0
    for _ in range(count(channel, topology)):
        if limit is not None and matched >= limit:
            return
        method, properties, body = channel.basic_get(topology.dead_letter_queue, auto_ack=False)
        if method is None:
            return
        report = FailureReport.read(properties, method.routing_key, body)
        payload = report.payload if isinstance(report.payload, dict) else {}
        if cqrs_id is not None and payload.get("cqrs_id") != cqrs_id:
            continue
        matched += 1
        yield DeadLetter(method.delivery_tag, method.routing_key, properties, body, report)


def retry(channel: BlockingChannel, letter: DeadLetter, topology: Topology) -> None:
    """Back to the replica's queue with its retries reset; it dead-letters again if still bad.
    Needs a channel in confirm mode: the dead letter is removed only after the broker has the
    copy."""
    channel.basic_publish(
        exchange="",
        routing_key=topology.queue,
        body=letter.body,
        properties=fresh_properties(letter.properties),
        mandatory=True,
    )
    channel.basic_ack(letter.tag)


def purge(channel: BlockingChannel, letter: DeadLetter) -> None:
    channel.basic_ack(letter.tag)


def retry_as_task(channel: BlockingChannel, letter: DeadLetter) -> None:
    """REPLICATION_MODE=celery: back as a new apply task (retries from zero)."""
    from celery import current_app
    from django.conf import settings

    from django_tools.wire import APPLY_TASK

    current_app.send_task(
        APPLY_TASK,
        args=[letter.body.decode("utf-8", errors="replace")],
        queue=settings.CELERY_TASK_DEFAULT_QUEUE,
    )
    channel.basic_ack(letter.tag)
