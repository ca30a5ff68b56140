"""Reading, replaying and purging the replica's dead-letter queue: the code of `manage.py
cqrs_dead_letters` and of the dead-letter page of the admin alike.

Reading MOVES letters, it never gives them back. A letter read and given back (a nack with
requeue, or a channel closed with it unacknowledged) counts as a delivery on a quorum queue, and
RabbitMQ 4 drops a quorum queue's message at its 20th delivery unless told otherwise: the page
viewed twenty times emptied the queue. So a reader makes one pass over the queue (`Reading`):
each letter is taken with `basic_get`, then either acted on (retried: published to the replica's
queue; purged) or kept: a copy published to the tail of the same queue, and only once the broker
confirmed the copy is the letter acknowledged. The copy is a new message (its delivery count
starts at zero) and the queue ends the pass holding the same letters in the same order. A
reader killed at any point loses nothing: at most the one letter it held comes back by itself
(counted once) and may also be in the queue as its copy (a duplicate, shown as `<id>-2`).

One reader at a time (`reader_lock`): an exclusive queue `<dead-letter queue>.reader` on the
broker, which it frees by itself when the reader's connection ends (killed included). Two
readers that interleaved would see each other's copies; an action waits for a viewer's pass and
then finds every letter the operator saw.

Each letter has an identity (`letter_id`): a hash of its message id, its headers and its body,
the same every time the letter is read, so that a letter chosen on one read (a line of the page,
a line of `dump --detail`) is found again on the next one and acted on alone. A letter retried
carries that identity along (`x-cqrs-letter-id`, with its first failure): if it dies again it is
the same letter, under the same id, with its first failure kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

import pika
from django.conf import settings
from pika import spec
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.adapters.utils.connection_workflow import AMQPConnectorException
from pika.exceptions import AMQPError, ChannelClosedByBroker, NackError, UnroutableError

from django_tools import signing
from django_tools.amqp_properties import undecodable
from django_tools.broker import blocking_connection
from django_tools.conf import setting
from django_tools.replica.failures import (
    BROKER_HEADERS,
    FIRST_FAILURE,
    LETTER_ID,
    FailureReport,
    fresh_properties,
)
from django_tools.replica.topology import QueueTypeMismatch, Topology

#: What acting on a letter may be.
RETRY, PURGE = "retry", "purge"
ACTIONS = (RETRY, PURGE)
#: What a broker that is down, refuses or stops answering raises.
BROKER_ERRORS = (AMQPError, AMQPConnectorException, OSError)
#: Headers the broker itself writes while a letter waits (a quorum queue counts deliveries):
#: left out of the identity, and of the copies a reader puts back.
VOLATILE_HEADERS = BROKER_HEADERS - {"x-death"}
#: The reader lock: an exclusive queue of this name beside the dead-letter queue.
LOCK_SUFFIX = ".reader"
#: Seconds a reader waits for another one to finish its pass before giving up.
LOCK_TIMEOUT = 10.0
LOCK_POLL = 0.05
MIGRATING_SUFFIX = ".migrating"  # queue_migration's holding queue (imported there from here)


class ReaderBusy(Exception):
    """Another reader (an operator's page, a command, a queue migration) holds the lock."""


class NotActed(Exception):
    """The broker refused a retried letter (its queue is missing or refuses publishers): the
    letter was put back, nothing is lost."""

    def __init__(self, queue: str, why: str) -> None:
        super().__init__(f"{queue} refused the letter ({why}); it stays in the dead-letter queue")
        self.queue = queue
        self.why = why  # "missing" or "refused"


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
    """The identity of a dead letter: the one it had when it was retried (its
    `x-cqrs-letter-id`), or else the same for the same message id, headers and body, on every
    read (the broker's own counters left out)."""
    kept = ((properties.headers if properties else None) or {}).get(LETTER_ID)
    if isinstance(kept, bytes | bytearray):
        kept = bytes(kept).decode("utf-8", errors="replace")
    if isinstance(kept, str) and kept:
        return kept
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


def queue_size(connection: BlockingConnection, queue: str) -> int | None:
    """The ready messages of `queue`, None when it does not exist (probed on a channel of its
    own: a passive declare of a missing queue closes its channel)."""
    channel = connection.channel()
    try:
        size = channel.queue_declare(queue, passive=True).method.message_count
    except ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return None
        raise
    with contextlib.suppress(*BROKER_ERRORS):
        channel.close()
    return size


def count(channel: BlockingChannel, topology: Topology) -> int:
    return channel.queue_declare(topology.dead_letter_queue, passive=True).method.message_count


# --- the reader lock ------------------------------------------------------------------------


def lock_queue(topology: Topology) -> str:
    return topology.dead_letter_queue + LOCK_SUFFIX


@contextlib.contextmanager
def reader_lock(
    connection: BlockingConnection, topology: Topology, timeout: float = LOCK_TIMEOUT
) -> Iterator[None]:
    """Hold the dead-letter queue's reader lock (waiting up to `timeout` seconds for another
    holder; ReaderBusy after that). An exclusive queue: the broker refuses it to every other
    connection (405) and deletes it when this one ends, however it ends."""
    name = lock_queue(topology)
    deadline = time.monotonic() + timeout
    while True:
        channel = connection.channel()
        try:
            channel.queue_declare(name, exclusive=True, arguments={"x-queue-type": "classic"})
            break
        except ChannelClosedByBroker as exc:
            if exc.reply_code != 405:  # RESOURCE_LOCKED: held by another connection
                raise
        if time.monotonic() >= deadline:
            raise ReaderBusy(
                f"another reader of {topology.dead_letter_queue} (an operator's page, a "
                f"cqrs_dead_letters command or a queue migration) did not finish within "
                f"{timeout:.0f}s; nothing was done"
            )
        connection.sleep(LOCK_POLL)
    try:
        yield
    finally:
        with contextlib.suppress(*BROKER_ERRORS):
            channel.queue_delete(name)
            channel.close()


# --- one pass over the queue ----------------------------------------------------------------


class Reading:
    """One pass over the dead-letter queue, under the reader lock, every letter visited once in
    queue order::

        with Reading(connection, topology) as reading:
            for letter in reading.letters(cqrs_id="book"):
                reading.act(RETRY, letter)   # or leave it: it is kept

    A letter yielded and not acted on before asking for the next one is kept (moved to the
    tail, see the module's docstring), and leaving the block visits and keeps the rest, so the
    queue ends as it started, minus what was acted on. `exists` is False when the queue does
    not exist (then there is nothing to read)."""

    def __init__(
        self,
        connection: BlockingConnection,
        topology: Topology,
        *,
        lock_timeout: float = LOCK_TIMEOUT,
    ) -> None:
        self.connection = connection
        self.topology = topology
        self.queue = topology.dead_letter_queue
        self.lock_timeout = lock_timeout
        self.exists = False
        #: The letters in the queue when the pass began.
        self.total = 0
        self.entered = False
        self._visited = 0
        self._seen: dict[str, int] = {}
        self._pending: DeadLetter | None = None
        self._stack = contextlib.ExitStack()
        self._channel: BlockingChannel | None = None

    def __enter__(self) -> Reading:
        # A queue migration holds the reader lock too, but a reader waiting for it would only
        # time out: say at once that the queues are moving (MigrationInProgress, one line).
        self.topology.refuse_while_migrating(self.connection)
        self._stack.enter_context(reader_lock(self.connection, self.topology, self.lock_timeout))
        try:
            size = queue_size(self.connection, self.queue)
            self.exists, self.total = size is not None, size or 0
            self._channel = self.connection.channel()
            self._channel.confirm_delivery()
        except BaseException:
            self._stack.close()
            raise
        self.entered = True
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc is None:
                self.finish()
            elif isinstance(exc, NotActed):
                # The channel is fine: keep the rest, so the queue keeps its order.
                with contextlib.suppress(*BROKER_ERRORS):
                    self.finish()
            # Anything else (the connection lost): the one letter held comes back by itself.
        finally:
            if self._channel is not None:
                with contextlib.suppress(*BROKER_ERRORS):
                    self._channel.close()
            self._stack.close()

    def letters(
        self,
        *,
        cqrs_id: str | None = None,
        reason: str | None = None,
        ids: Collection[str] | None = None,
        limit: int | None = None,
    ) -> Iterator[DeadLetter]:
        """The letters that match (a CQRS_ID, a reason, identities; at most `limit`), oldest
        first; every other one is kept as it is visited."""
        wanted = set(ids) if ids is not None else None
        matched = 0
        while self._visited < self.total:
            method, properties, body = self._channel.basic_get(self.queue, auto_ack=False)
            if method is None:
                self.total = self._visited  # fewer than counted (a reader killed before us)
                return
            self._visited += 1
            letter = self._letter(method, properties, body)
            self._pending = letter
            if (limit is None or matched < limit) and _matches(letter, cqrs_id, reason, wanted):
                matched += 1
                yield letter
            if self._pending is letter:  # not acted on
                self._keep(letter)

    def finish(self) -> None:
        """Keep the letter in hand, if any, and every letter not visited yet."""
        if self._pending is not None:
            self._keep(self._pending)
        for _ in self.letters(ids=()):
            pass

    def act(self, action: str, letter: DeadLetter) -> None:
        """`retry` (to the replica's queue, retries reset; a new Celery task in
        REPLICATION_MODE=celery) or `purge` the letter just yielded. NotActed when the broker
        refused the retried copy (the letter is kept)."""
        if letter is not self._pending:
            raise ValueError("act on the letter just read, before reading the next one")
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}: use {' or '.join(ACTIONS)}")
        if action == RETRY and setting("REPLICATION_MODE") == "celery":
            _send_as_task(letter)
        elif action == RETRY:
            try:
                # mandatory + confirms: returns once the broker has the copy in the queue.
                self._channel.basic_publish(
                    exchange="",
                    routing_key=self.topology.queue,
                    body=letter.body,
                    properties=fresh_properties(letter.properties, letter.id),
                    mandatory=True,
                )
            except (UnroutableError, NackError) as exc:
                self._keep(letter)
                why = "missing" if isinstance(exc, UnroutableError) else "refused"
                raise NotActed(self.topology.queue, why) from exc
        self._channel.basic_ack(letter.tag)
        self._pending = None

    def purge_all(self) -> int:
        """Every letter removed at once (a queue purge), before any is read; how many."""
        if self._visited:
            raise ValueError("purge_all before reading any letter")
        purged = 0
        if self.exists:
            purged = self._channel.queue_purge(self.queue).method.message_count
        self.total = 0
        return purged

    def _keep(self, letter: DeadLetter) -> None:
        """The copy to the tail, confirmed, then the letter acknowledged."""
        self._channel.basic_publish(
            exchange="",
            routing_key=self.queue,
            body=letter.body,
            properties=kept_properties(letter.properties),
            mandatory=True,
        )
        self._channel.basic_ack(letter.tag)
        self._pending = None

    def _letter(self, method, properties, body: bytes) -> DeadLetter:
        identity = letter_id(properties, body)
        self._seen[identity] = self._seen.get(identity, 0) + 1
        if self._seen[identity] > 1:
            identity = f"{identity}-{self._seen[identity]}"
        report = FailureReport.read(properties, method.routing_key, body)
        return DeadLetter(
            method.delivery_tag, method.routing_key, properties, body, report, id=identity
        )


def _matches(letter: DeadLetter, cqrs_id, reason, wanted: set[str] | None) -> bool:
    if wanted is not None and letter.id not in wanted:
        return False
    payload = letter.report.payload if isinstance(letter.report.payload, dict) else {}
    if cqrs_id is not None and payload.get("cqrs_id") != cqrs_id:
        return False
    return reason is None or letter.report.dead_reason == reason


class _RawProperties(spec.BasicProperties):
    """Properties sent back exactly as they came (headers pika could not decode)."""

    def __init__(self, encoded: bytes) -> None:
        super().__init__()
        self.encoded = encoded

    def encode(self):
        return [self.encoded]


def kept_properties(properties: pika.BasicProperties) -> pika.BasicProperties:
    """The properties of a kept letter's copy: the same (signature, story, message id), less
    the broker's delivery counters, persistent; no `user_id`, which the broker checks against
    the connection's user (the letter may have been published by another one)."""
    if undecodable(properties) and getattr(properties, "raw", None):
        return _RawProperties(properties.raw)
    headers = {
        key: value
        for key, value in (properties.headers or {}).items()
        if key not in VOLATILE_HEADERS
    }
    return pika.BasicProperties(
        content_type=properties.content_type,
        content_encoding=properties.content_encoding,
        headers=headers or None,
        delivery_mode=2,
        priority=properties.priority,
        correlation_id=properties.correlation_id,
        reply_to=properties.reply_to,
        expiration=properties.expiration,
        message_id=properties.message_id,
        timestamp=properties.timestamp,
        type=properties.type,
        app_id=properties.app_id,
    )


def _send_as_task(letter: DeadLetter) -> None:
    """REPLICATION_MODE=celery: back as a new apply task (retries from zero), with the
    letter's signature, first failure and identity as task headers (what the task puts on the
    letter if it dies again: django_tools.replica.tasks)."""
    from celery import current_app

    from django_tools.wire import APPLY_TASK

    headers = fresh_properties(letter.properties, letter.id).headers or {}
    current_app.send_task(
        APPLY_TASK,
        args=[letter.body.decode("utf-8", errors="replace")],
        queue=setting("CELERY_TASK_DEFAULT_QUEUE"),
        headers={
            key: value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
            for key, value in headers.items()
            if key in (signing.HEADER, FIRST_FAILURE, LETTER_ID)
        },
    )


def read(
    channel: BlockingChannel,
    topology: Topology,
    *,
    cqrs_id: str | None = None,
    reason: str | None = None,
    ids: Collection[str] | None = None,
    limit: int | None = None,
) -> Iterator[DeadLetter]:
    """The dead letters that match, oldest first, read in one pass on `channel`'s connection
    (every letter kept: nothing changes)."""
    with Reading(channel.connection, topology) as reading:
        letters = list(reading.letters(cqrs_id=cqrs_id, reason=reason, ids=ids, limit=limit))
    return iter(letters)


def type_mismatch(connection: BlockingConnection, topology: Topology) -> str | None:
    """With CQRS_QUEUE_TYPE set, the first of the replica's queue and its dead-letter queue
    that exists with another type (or other arguments) than it asks for; None otherwise. A
    reader declares nothing else: a queue missing (a migration under way) is not created."""
    if topology.queue_type is None:
        return None
    for queue in (topology.queue, topology.dead_letter_queue):
        if queue_size(connection, queue) is None:
            continue
        try:
            topology._declare_queue(connection, queue, topology.queue_type)
        except QueueTypeMismatch:
            return queue
    return None


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


@dataclass(frozen=True)
class Listing:
    """What `browse` found: `letters` of the `total` in `queue`; when the queue does not exist
    (`exists` False), how many messages a queue migration holds in `<queue>.migrating`."""

    queue: str
    total: int
    letters: list[DeadLetter]
    exists: bool = True
    migrating: int | None = None
    #: A queue of the replica that exists with another type (or other arguments) than
    #: CQRS_QUEUE_TYPE asks for (a queue migration under way or not finished), or None.
    mismatch: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What `act_on` did: `action` on the letters `done` (identities) of the `total`; `missing`
    were asked for and not in the queue (someone acted on them before); `error` stopped it
    halfway (the letters not done are still in the dead-letter queue)."""

    action: str
    done: list[str]
    total: int
    missing: list[str] = field(default_factory=list)
    error: BaseException | None = None


def browse(
    topology: Topology,
    *,
    url: str | None = None,
    cqrs_id: str | None = None,
    reason: str | None = None,
    ids: Collection[str] | None = None,
    limit: int | None = None,
    timeout: float | None = None,
    lock_timeout: float = LOCK_TIMEOUT,
) -> Listing:
    """The letters that match, read in one pass: changes nothing (and counts no delivery)."""
    connection = connect(url, timeout=timeout)
    try:
        with Reading(connection, topology, lock_timeout=lock_timeout) as reading:
            letters = list(reading.letters(cqrs_id=cqrs_id, reason=reason, ids=ids, limit=limit))
        migrating = None
        if not reading.exists:
            migrating = queue_size(connection, topology.dead_letter_queue + MIGRATING_SUFFIX)
        return Listing(
            topology.dead_letter_queue,
            reading.total,
            letters,
            reading.exists,
            migrating,
            mismatch=type_mismatch(connection, topology),
        )
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
    lock_timeout: float = LOCK_TIMEOUT,
) -> Outcome:
    """`action` (retry or purge) on the letters whose identity is in `ids`, and only on them.
    Raises (nothing done) when the broker or the lock cannot be had; a failure halfway is the
    Outcome's `error`, with what was done before it."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}: use {' or '.join(ACTIONS)}")
    connection = connect(url, timeout=timeout)
    reading = Reading(connection, topology, lock_timeout=lock_timeout)
    done: list[str] = []
    error = None
    try:
        with reading:
            for letter in reading.letters(ids=ids):
                reading.act(action, letter)
                done.append(letter.id)
    except (NotActed, *BROKER_ERRORS) as exc:
        if not reading.entered:
            raise
        error = exc
    finally:
        if connection.is_open:
            with contextlib.suppress(*BROKER_ERRORS):
                connection.close()
    missing = [] if error is not None else [i for i in ids if i not in set(done)]
    return Outcome(action, done, reading.total, missing, error)
