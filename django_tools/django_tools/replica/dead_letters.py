"""Reading, replaying and purging the replica's dead-letter queue: the code of `manage.py
cqrs_dead_letters` and of the dead-letter page of the admin alike.

Messages are read with `basic_get` and left unacknowledged unless acted on; closing the channel
gives the rest back to the queue in their places (`give_back`), so `dump` (and viewing the page)
changes nothing and a filtered `retry`/`purge` touches only what matched.

Each letter has an identity (`letter_id`): a hash of its message id, its headers and its body,
the same every time the letter is read, so that a letter chosen on one read (a line of the page,
a line of `dump`) is found again on the next one and acted on alone (`read(ids=...)`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

import pika
from django.conf import settings
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.adapters.utils.connection_workflow import AMQPConnectorException
from pika.exceptions import AMQPError

from django_tools.broker import blocking_connection
from django_tools.replica.failures import FailureReport, fresh_properties
from django_tools.replica.topology import Topology

#: What acting on a letter may be.
RETRY, PURGE = "retry", "purge"
ACTIONS = (RETRY, PURGE)
#: What a broker that is down, refuses or stops answering raises.
BROKER_ERRORS = (AMQPError, AMQPConnectorException, OSError)
#: Headers the broker itself changes while a letter waits (a quorum queue counts the deliveries
#: of a message read and given back): left out of the identity.
VOLATILE_HEADERS = frozenset({"x-delivery-count"})


@dataclass(frozen=True)
class DeadLetter:
    tag: int
    routing_key: str
    properties: pika.BasicProperties
    body: bytes
    report: FailureReport
    #: `letter_id`, with `-2`, `-3`… for the later copies of a letter read twice or more.
    id: str = field(default="")


def letter_id(properties: pika.BasicProperties | None, body: bytes) -> str:
    """The identity of a dead letter: the same for the same message id, headers and body, on
    every read (the broker's own counters left out)."""
    headers = {
        key: value
        for key, value in ((properties.headers if properties else None) or {}).items()
        if key not in VOLATILE_HEADERS
    }
    digest = hashlib.sha256()
    digest.update(_canonical(properties.message_id if properties else None).encode())
    digest.update(b"\0")
    digest.update(_canonical(headers).encode())
    digest.update(b"\0")
    digest.update(body)
    return digest.hexdigest()[:16]


def _canonical(value: Any) -> str:
    """A stable text of a header value, whatever pika decoded it to (tables in any key order)."""
    if isinstance(value, dict):
        items = sorted((str(key), _canonical(item)) for key, item in value.items())
        return "{" + ",".join(f"{key!r}:{item}" for key, item in items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_canonical(item) for item in value) + "]"
    if isinstance(value, bytes | bytearray):
        return "b:" + bytes(value).hex()
    return f"{type(value).__name__}:{value!r}"


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
    reason: str | None = None,
    ids: Collection[str] | None = None,
    limit: int | None = None,
) -> Iterator[DeadLetter]:
    """The dead letters that match (a CQRS_ID, a reason, identities), oldest first, each
    unacknowledged until acted on."""
    matched = 0
    wanted = set(ids) if ids is not None else None
    seen: dict[str, int] = {}
    for _ in range(count(channel, topology)):
        if limit is not None and matched >= limit:
            return
        if wanted is not None and not wanted:
            return  # every letter asked for was found
        method, properties, body = channel.basic_get(topology.dead_letter_queue, auto_ack=False)
        if method is None:
            return
        identity = letter_id(properties, body)
        seen[identity] = seen.get(identity, 0) + 1
        if seen[identity] > 1:
            identity = f"{identity}-{seen[identity]}"
        if wanted is not None:
            if identity not in wanted:
                continue
            wanted.discard(identity)
        report = FailureReport.read(properties, method.routing_key, body)
        payload = report.payload if isinstance(report.payload, dict) else {}
        if cqrs_id is not None and payload.get("cqrs_id") != cqrs_id:
            continue
        if reason is not None and report.dead_reason != reason:
            continue
        matched += 1
        yield DeadLetter(
            method.delivery_tag, method.routing_key, properties, body, report, id=identity
        )


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


def act(action: str, channel: BlockingChannel, letter: DeadLetter, topology: Topology) -> None:
    """`retry` (to the replica's queue, or as a Celery task in REPLICATION_MODE=celery) or
    `purge` one letter read on `channel` (in confirm mode)."""
    if action == PURGE:
        purge(channel, letter)
    elif action != RETRY:
        raise ValueError(f"unknown action {action!r}: use {' or '.join(ACTIONS)}")
    elif settings.REPLICATION_MODE == "celery":
        retry_as_task(channel, letter)
    else:
        retry(channel, letter, topology)


# --- a session on the dead-letter queue ---------------------------------------------------


def connect(url: str | None = None, *, timeout: float | None = None) -> BlockingConnection:
    """A connection to the replica's broker (`CQRS["url"]`); with `timeout`, one that gives up
    on a node that does not answer within it (an interactive page must not hang). Raises one of
    BROKER_ERRORS."""
    options = {}
    if timeout is not None:
        options = {
            "socket_timeout": timeout,
            "stack_timeout": timeout,
            "blocked_connection_timeout": timeout,
        }
    return blocking_connection(url or settings.CQRS["url"], **options)


def open_channel(connection: BlockingConnection, topology: Topology) -> BlockingChannel:
    """A channel in confirm mode (a retried letter is removed only once its copy is on the
    broker), with the replica's queues declared."""
    channel = connection.channel()
    channel.confirm_delivery()
    topology.declare(channel)
    return channel


def give_back(
    connection: BlockingConnection,
    channel: BlockingChannel,
    topology: Topology,
    kept: int,
    timeout: float = 10.0,
) -> bool:
    """Close `channel`, so that the letters read and not acted on go back to the queue, and
    wait (bounded) until they are there (for a quorum queue, a moment later): whoever reads the
    queue next sees them all."""
    if channel.is_open:
        channel.close()
    return wait_for_depth(connection, topology, kept, timeout)


@dataclass(frozen=True)
class Listing:
    """What `browse` found: `letters` of the `total` in `queue`."""

    queue: str
    total: int
    letters: list[DeadLetter]


@dataclass(frozen=True)
class Outcome:
    """What `act_on` did: `action` on the letters `done` (identities) of the `total`."""

    action: str
    done: list[str]
    total: int


def browse(
    topology: Topology,
    *,
    url: str | None = None,
    cqrs_id: str | None = None,
    reason: str | None = None,
    ids: Collection[str] | None = None,
    limit: int | None = None,
    timeout: float | None = None,
) -> Listing:
    """The letters that match, read and given back: changes nothing."""
    connection = connect(url, timeout=timeout)
    try:
        channel = open_channel(connection, topology)
        total = count(channel, topology)
        letters = list(
            read(channel, topology, cqrs_id=cqrs_id, reason=reason, ids=ids, limit=limit)
        )
        give_back(connection, channel, topology, total, timeout=timeout or 10.0)
        return Listing(topology.dead_letter_queue, total, letters)
    finally:
        if connection.is_open:
            connection.close()


def act_on(
    topology: Topology,
    action: str,
    ids: Collection[str],
    *,
    url: str | None = None,
    timeout: float | None = None,
) -> Outcome:
    """`action` (retry or purge) on the letters whose identity is in `ids`, and only on
    them; a letter no longer there (someone else acted on it) is skipped."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}: use {' or '.join(ACTIONS)}")
    connection = connect(url, timeout=timeout)
    try:
        channel = open_channel(connection, topology)
        total = count(channel, topology)
        done = []
        for letter in read(channel, topology, ids=ids):
            act(action, channel, letter, topology)
            done.append(letter.id)
        give_back(connection, channel, topology, total - len(done), timeout=timeout or 10.0)
        return Outcome(action, done, total)
    finally:
        if connection.is_open:
            connection.close()
