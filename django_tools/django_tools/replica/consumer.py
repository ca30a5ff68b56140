"""The replica's consume loop: messages → validated events → one transaction per batch → ack.

For every message, exactly one of:
- applied (or ignored as a duplicate / stale / already deleted): acknowledged after the
  transaction that applied its batch committed;
- a permanent failure (see `messages.PermanentFailure`): a copy with the reason goes to the
  dead-letter queue at once, then the message is acknowledged;
- a transient failure (database errors, lock timeouts, lost connections, anything else): a copy
  goes to the retry queue of its tier, where it waits on the broker and then comes back to the
  replica's queue; after the last retry it goes to the dead-letter queue instead.

Copies are published with publisher confirms before the original is acknowledged, so a crash at
any point leaves the message either still in the queue or already safely moved. A redelivery
after a crash is harmless: applying is idempotent (see `apply`).

A batch is applied in one transaction. If that fails, its messages are applied one by one, so
that one bad message never drags its neighbours into a retry or the dead-letter queue.

A message delivered again (the worker that had it died, or gave it back) is handled alone, on
probation (see `probation`): one that kills every worker it reaches is set aside to the
dead-letter queue (reason `redelivered`) after CQRS_MAX_DELIVERIES deliveries, unread.

The consumer owns its consume loop: when the broker cancels it (its queue was deleted, an
operator cancelled it, a node holding the queue went away) or the connection drops, it
connects again, declares its topology again and goes on; only `stop` ends it.

Its connection has the AMQP heartbeat and the watch of `broker.WatchedConnection`: a link that
dies silently is given up within 2 × CQRS_AMQP_HEARTBEAT + 1 s. While a batch is in the
database, `broker.LinkKeeper` keeps servicing the connection, so a long apply never makes the
broker drop a healthy consumer; and the worker's heartbeat file is written every second
whatever it waits for, so `cqrs_consume` can tell a paused or hung worker from a busy one.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pika
from django.db import close_old_connections, connections
from django.db.models import Model
from opentelemetry.trace import SpanKind, Status, StatusCode
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError

from django_tools import amqp_properties, signing, tracing
from django_tools.broker import LinkKeeper, blocking_connection, node_of
from django_tools.heartbeat import Heartbeat
from django_tools.reconnect import keep_running
from django_tools.replica import metrics
from django_tools.replica.apply import APPLIED, Change, apply_changes, prepare, transaction_for
from django_tools.replica.failures import (
    CrashLooping,
    FailedCopy,
    SetAside,
    UndecodableMessage,
    classify,
    failed_copy,
    publish_copy,
    retries_of,
)
from django_tools.replica.messages import decode
from django_tools.replica.probation import Probation, Trial, suspect
from django_tools.replica.topology import Topology
from django_tools.replica.traced_changes import log_traced

logger = logging.getLogger("django_tools.replica")


#: Messages applied before their acknowledgement goes out (one `multiple` ack for all of them),
#: unless the queue goes quiet first (`IDLE_ACK`) or a batch copies a message elsewhere (a retry,
#: a dead letter: acknowledged at once). At low load every message is a batch of
#: one, and an ack each was a command through the quorum queue's log on the broker and a frame
#: on the consumer: CPU taken from the next message on the same cores. A worker that dies gets
#: them delivered again, flagged, and applies them as duplicates (idempotent, by revision).
#: Well under the prefetch (500), so deliveries never wait for these acks.
ACK_EVERY = 100
#: Seconds without a delivery after which the pending acknowledgement goes out.
IDLE_ACK = 0.05
#: Seconds between two checks of the database connections (`close_old_connections`), unless
#: the last batch met a database error (then before the next one). Each check makes the next
#: query run a health check first (CONN_HEALTH_CHECKS): a round trip more for every batch, and
#: at low load every message is a batch.
CONNECTIONS_CHECK_EVERY = 1.0


class ConsumerCancelled(AMQPError):
    """The broker cancelled our consumer (queue deleted, operator, failover): consume again."""


@dataclass(frozen=True)
class Delivery:
    tag: int
    routing_key: str
    properties: pika.BasicProperties
    body: bytes
    #: Delivered before: the broker's flag (a worker died or gave it back).
    redelivered: bool = False

    @classmethod
    def of(cls, method, properties: pika.BasicProperties, body: bytes) -> Delivery:
        return cls(method.delivery_tag, method.routing_key, properties, body, method.redelivered)

    @property
    def on_probation(self) -> bool:
        return suspect(self.redelivered, self.properties)


class Consumer:
    def __init__(
        self,
        topology: Topology,
        url: str,
        *,
        prefetch: int = 500,
        batch_size: int = 250,
        stop: threading.Event | None = None,
        rng: random.Random | None = None,
        heartbeat: Heartbeat | None = None,
        probation: Probation | None = None,
    ) -> None:
        self.topology = topology
        self.url = url
        self.prefetch = max(prefetch, batch_size)
        self.batch_size = batch_size
        self.stop = stop or threading.Event()
        self.rng = rng or random.Random()
        self.stats: Counter[str] = Counter()
        self._outcomes: dict[int, str] = {}  # delivery tag → outcome, for the batch in hand
        self.heartbeat = heartbeat or Heartbeat.disabled()
        self._keeper: LinkKeeper | None = None  # services the connection while a batch applies
        self._node = 0  # the node of the broker's URL the next connection tries first
        self._unacked = 0  # messages done, their acknowledgement pending (`_ack_later`)
        self._ack_tag = 0  # the delivery tag that acknowledges them all (`multiple`)
        self._connections_checked = 0.0  # monotonic time of the last `_check_connections`
        self.probation = probation or Probation.from_settings()
        self.probation.prune()

    # --- connection ----------------------------------------------------------------------

    def run(self) -> None:
        """Consume until `stop` is set, reconnecting with backoff when the broker goes away or
        cancels the consumer."""
        keep_running(
            self._session,
            stop=self.stop,
            retry_on=(AMQPError, OSError),  # ConsumerCancelled included
            logger=logger,
            what="AMQP connection",
            on_retry=self._on_retry,
            beat=lambda: self.heartbeat.beat("reconnecting", self.stats),
        )

    def _on_retry(self, _exc: BaseException) -> None:
        self._node += 1  # the next attempt starts at another node of a cluster
        self.heartbeat.beat("reconnecting", self.stats)

    def _session(self, connected: Callable[[], None]) -> None:
        self.heartbeat.beat("connecting", self.stats)
        connection = blocking_connection(
            self.url,
            first=self._node,
            name="cqrs-consume",
            blocked_connection_timeout=60,
            # Beats every second while pika waits (a publish the broker blocks, a slow declare).
            on_tick=lambda: self.heartbeat.beat("consuming", self.stats),
        )
        self._node = node_of(connection, self.url)
        self._keeper = LinkKeeper(connection)
        try:
            channel = connection.channel()
            channel.basic_qos(prefetch_count=self.prefetch)
            channel.confirm_delivery()
            self.topology.declare(channel)
            connected()
            logger.info(
                "consuming %s (prefetch %s, batches of up to %s)",
                self.topology.queue,
                self.prefetch,
                self.batch_size,
            )
            self._consume(channel)
        finally:
            self._keeper.close()
            self._keeper = None
            if connection.is_open:
                with contextlib.suppress(AMQPError):
                    connection.close()

    def _servicing_link(self) -> contextlib.AbstractContextManager:
        """Around work that does not touch the connection (a batch's database work): the
        connection keeps being serviced meanwhile."""
        return self._keeper.busy() if self._keeper is not None else contextlib.nullcontext()

    def _consume(self, channel: BlockingChannel) -> None:
        self._unacked = 0  # a new channel: its delivery tags count from 1 again
        messages = channel.consume(self.topology.queue, inactivity_timeout=IDLE_ACK)
        for method, properties, body in messages:
            self.heartbeat.beat("consuming", self.stats, active=method is not None)
            if self.stop.is_set():
                self._ack_pending(channel)
                channel.cancel()  # gives back the prefetched, unacknowledged messages
                return
            if method is None:
                self._ack_pending(channel)  # the queue went quiet
                continue
            batch = [Delivery.of(method, properties, body)]
            while len(batch) < self.batch_size and channel.get_waiting_message_count():
                method, properties, body = next(messages)
                batch.append(Delivery.of(method, properties, body))
            self.handle(channel, batch)
        # pika ends the generator when the broker cancels the consumer. Whatever was delivered
        # and not yet acknowledged goes back to the queue (if it still exists) when the
        # connection closes; the next session declares the topology again and consumes anew.
        raise ConsumerCancelled(f"the broker cancelled the consumer of {self.topology.queue}")

    # --- one batch -----------------------------------------------------------------------

    def handle(self, channel: BlockingChannel, batch: list[Delivery]) -> None:
        """Every message of `batch` applied, or copied to where its failure sends it, then
        acknowledged: those on probation first, each alone; then the rest together."""
        fresh = [delivery for delivery in batch if not delivery.on_probation]
        if len(fresh) < len(batch):
            for delivery in batch:
                if delivery.on_probation:
                    self._on_probation(channel, delivery)
            # Each acknowledged on its own before the rest: the acknowledgement of the rest
            # (`multiple`, up to its last tag) can only cover messages already done.
        if fresh:
            self._handle(channel, fresh)

    def _on_probation(self, channel: BlockingChannel, delivery: Delivery) -> None:
        """A message delivered again, alone, with its marker written first: if it kills this
        worker, the next delivery knows (see `probation`)."""
        self.heartbeat.beat("consuming", self.stats, active=True)
        trial = self.probation.begin(self.topology.queue, delivery.body, delivery.properties)
        try:
            if trial.set_aside:
                self._set_aside(channel, delivery, trial)
            else:
                self._handle(channel, [delivery], multiple=False)
        except (AMQPError, OSError):
            # The link ended under this try, not the worker: the marker says a worker died.
            # Left behind, the message's next delivery counted a death, and a message given
            # back a few times by forced connection closes was set aside (the cluster chaos
            # test, seen twice).
            self.probation.end(trial)
            raise
        self.probation.end(trial)

    def _set_aside(self, channel: BlockingChannel, delivery: Delivery, trial: Trial) -> None:
        """To the dead-letter queue unread (decoding it may be what kills), then acknowledged."""
        error = CrashLooping(
            f"delivered {trial.deliveries} times and each worker that handled it died before it "
            f"was done (CQRS_MAX_DELIVERIES={self.probation.max_deliveries})"
        )
        metrics.EVENTS_CONSUMED.inc()
        copy = self._failure(delivery, error, deliveries=trial.deliveries)
        publish_copy(channel, copy, delivery.body)
        channel.basic_ack(delivery.tag)
        logger.error("%s: %s", copy.description, delivery.body[:500])

    def _handle(self, channel: BlockingChannel, batch: list[Delivery], multiple=True) -> None:
        self._check_connections()
        received = tracing.now_ns() if tracing.enabled() else 0
        self._outcomes: dict[int, str] = {}
        metrics.EVENTS_CONSUMED.inc(len(batch))
        failures: dict[int, FailedCopy] = {}
        changes: list[tuple[Delivery, Change]] = []
        for delivery in batch:
            try:
                changes.append((delivery, validate(delivery)))
            except Exception as exc:
                failures[delivery.tag] = self._failure(delivery, exc, validating=True)
        if changes:
            with self._servicing_link():
                failures.update(self._apply(changes))
        for delivery in batch:
            failure = failures.get(delivery.tag)
            if failure is not None:
                publish_copy(channel, failure, delivery.body)
                logger.warning("%s: %s", failure.description, delivery.body[:500])
                self._outcomes[delivery.tag] = failure.description
        # Every message of the batch is now applied or safely copied: acknowledge them all.
        # Applied ones may wait for the group's ack; a batch that copied a message (a retry
        # tier, the dead letters) is acknowledged now, with every pending one: redelivered
        # after a crash, the original would come back before its retry's delay.
        if multiple and not failures:
            self._ack_later(channel, batch[-1].tag, len(batch))
        elif multiple:
            self._unacked = 0
            channel.basic_ack(batch[-1].tag, multiple=True)
        else:
            channel.basic_ack(batch[-1].tag)
        if received:
            self._trace(batch, received)

    def _check_connections(self) -> None:
        """Django's check of the database connections between two requests, for a batch: close
        those too old or broken (the next query reconnects). At most every
        `CONNECTIONS_CHECK_EVERY` seconds, and at once after a database error."""
        now = time.monotonic()
        failed = any(c.errors_occurred for c in connections.all(initialized_only=True))
        if failed or now - self._connections_checked >= CONNECTIONS_CHECK_EVERY:
            self._connections_checked = now
            close_old_connections()

    def _ack_later(self, channel: BlockingChannel, tag: int, count: int) -> None:
        """Messages up to `tag` are done: acknowledged with the next ones, once `ACK_EVERY` are
        done or the queue goes quiet (`IDLE_ACK`); a `multiple` ack covers every earlier tag
        not acknowledged yet, and only those (the ones on probation went out alone)."""
        self._ack_tag = tag
        self._unacked += count
        if self._unacked >= ACK_EVERY:
            self._ack_pending(channel)

    def _ack_pending(self, channel: BlockingChannel) -> None:
        if self._unacked:
            self._unacked = 0
            channel.basic_ack(self._ack_tag, multiple=True)

    def _trace(self, batch: list[Delivery], received: int) -> None:
        """A span a traced message, continuing the trace its headers carry: from the batch's
        arrival to its acknowledgement (its transaction committed, or its copy moved)."""
        done = tracing.now_ns()
        for delivery in batch:
            parent = tracing.extract_headers(
                delivery.properties.headers if delivery.properties else None
            )
            if parent is None:
                continue
            outcome = self._outcomes.get(delivery.tag, "")
            span = tracing.tracer().start_span(
                "cqrs.apply", context=parent, kind=SpanKind.CONSUMER, start_time=received,
                attributes={"messaging.system": "rabbitmq", "cqrs.outcome": outcome,
                            "messaging.destination.name": self.topology.queue,
                            "messaging.batch.message_count": len(batch)},
            )  # fmt: skip
            if outcome not in ("applied", "duplicate", "stale", "deleted_before"):
                span.set_status(Status(StatusCode.ERROR, outcome))
            span.end(end_time=done)

    def _apply(self, changes: list[tuple[Delivery, Change]]) -> dict[int, FailedCopy]:
        try:
            self._apply_in_transaction(changes)
            return {}
        except Exception as exc:
            if len(changes) == 1:
                delivery, change = changes[0]
                return {delivery.tag: self._failure(delivery, exc, model=change.model)}
            logger.info("a batch of %s failed (%r); applying one by one", len(changes), exc)
        failures = {}
        for delivery, change in changes:
            try:
                self._apply_in_transaction([(delivery, change)])
            except Exception as exc:
                failures[delivery.tag] = self._failure(delivery, exc, model=change.model)
        return failures

    def _apply_in_transaction(self, changes: list[tuple[Delivery, Change]]) -> None:
        started = time.perf_counter()
        batch = [change for _, change in changes]
        with transaction_for(batch):  # on the database(s) the changes are written to
            outcomes = apply_changes(batch)
        metrics.APPLY_SECONDS.observe(time.perf_counter() - started)
        self.stats.update(outcomes)
        self._report(changes, outcomes)
        for (delivery, _), outcome in zip(changes, outcomes, strict=True):
            self._outcomes[delivery.tag] = outcome

    def _report(self, changes: list[tuple[Delivery, Change]], outcomes: list[str]) -> None:
        now = time.time()
        counts = Counter(
            (change.event.cqrs_id, outcome)
            for (_, change), outcome in zip(changes, outcomes, strict=True)
        )
        for (cqrs_id, outcome), count in counts.items():
            metrics.EVENTS_APPLIED.labels(cqrs_id, outcome).inc(count)
        for (_, change), outcome in zip(changes, outcomes, strict=True):
            updated = change.updated if change.values is not None else None
            if outcome == APPLIED and updated is not None:
                metrics.REPLICATION_LAG.observe(max(0.0, now - updated.timestamp()))
            log_traced(change, outcome)

    # --- failures ------------------------------------------------------------------------

    def _failure(
        self,
        delivery: Delivery,
        exc: BaseException,
        validating: bool = False,
        deliveries: int | None = None,
        model: type[Model] | None = None,
    ) -> FailedCopy:
        """`model`: the replica model of a message that failed while applied (its retry hooks
        have a say, see `classify`)."""
        retries = retries_of(delivery.properties)
        decision = classify(
            exc, retries, self.topology.policy, validating=validating, rng=self.rng, model=model
        )
        self.stats["dead_lettered" if isinstance(decision, SetAside) else "retried"] += 1
        return failed_copy(
            decision,
            exc,
            topology=self.topology,
            properties=delivery.properties,
            routing_key=delivery.routing_key,
            retries=retries,
            deliveries=deliveries,
        )


def validate(delivery: Delivery) -> Change:
    """The delivery as a change ready to apply; raises when it can never be applied as it is."""
    reason = amqp_properties.undecodable(delivery.properties)
    if reason:
        raise UndecodableMessage(f"AMQP properties not decodable: {reason}")
    signing.verify(delivery.body, delivery.properties.headers if delivery.properties else None)
    return prepare(decode(delivery.body))
