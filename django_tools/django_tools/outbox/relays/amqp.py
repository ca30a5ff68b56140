"""The AMQP relay: outbox rows → RabbitMQ, with pipelined publisher confirms.

Loop (one asynchronous pika connection, one thread):

1. take the oldest unpublished rows (id order, up to `batch_size`);
2. publish them all to the exchange without waiting, persistent, each on its routing key;
3. when the broker has confirmed every one of them, mark the confirmed ones published;
4. repeat at once while there is work; when idle, poll with a growing pause (`poll_min` →
   `poll_max`). (Pruning published rows is Celery beat's job: `outbox.prune`.)

A row is marked published only after the broker confirmed it, so a crash anywhere means the row
is sent again: delivery is at least once, and replicas ignore the duplicates (revision check).
A broker that goes away closes the connection; the relay reconnects with backoff and goes on
from the first unpublished row. Writes on the master never wait for any of this.

A link that dies silently (no FIN, no RST) is given up by the connection's watch
(`broker.WatchedConnection`: nothing received for 2 × the AMQP heartbeat), and a batch whose
confirms do not come within `confirm_timeout` (OUTBOX_CONFIRM_TIMEOUT) gives the connection up
too — except while the broker says it blocks publishers (a resource alarm), which is a wait
with a known end, not a dead link.

Only one relay publishes at a time (`lock.RelayLock`); a second one waits as a standby
and takes over when the first dies. With one publisher, rows go out in id order, so the events
of a product reach the broker in the order its transactions committed.

The lifecycle (lock, reconnects, heartbeat, bookkeeping, idle polling) is `base.Relay`'s; this
module is the transport's part: a session is a pika connection whose ioloop runs `step`, a batch
is published without waiting, and the broker's confirms call `confirmed`.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field

import pika
from opentelemetry.trace import SpanKind, set_span_in_context

from django_tools import pika_writes, signing, tracing
from django_tools.broker import WatchedConnection, connection_parameters
from django_tools.outbox.relays.base import ConnectionLost, Relay, Row

logger = logging.getLogger("django_tools.outbox")


@dataclass
class _Batch:
    ids: dict[int, int] = field(default_factory=dict)  # delivery tag → outbox id, unconfirmed
    spans: list = field(default_factory=list)  # the publish spans of traced rows, until confirmed
    acked: list[int] = field(default_factory=list)
    nacked: list[int] = field(default_factory=list)
    timer: object = None  # the confirm timeout


#: Batches published while the oldest waits for its confirms: the database work of the next
#: batch (read, then mark published) overlaps the broker's work on the previous one.
MAX_IN_FLIGHT = 2
#: After this many batches read past the ones in flight, let them drain and read from the
#: oldest unpublished row again: a row whose transaction committed after a later row was read
#: (ids are given at insert, rows appear at commit) waits at most this long.
SWEEP_EVERY = 10


class AmqpRelay(Relay):
    """REPLICATION_MODE=cqrs: django-cqrs messages with pipelined publisher confirms."""

    def __init__(
        self,
        url: str,
        exchange: str,
        *,
        max_in_flight: int = MAX_IN_FLIGHT,
        amqp_heartbeat: int | None = None,
        **options,
    ) -> None:
        super().__init__(**options)
        self.url = url
        self.exchange = exchange
        self.max_in_flight = max_in_flight
        self.amqp_heartbeat = amqp_heartbeat  # None: CQRS_AMQP_HEARTBEAT
        self._connection: WatchedConnection | None = None
        self._channel = None
        self._in_flight: deque[_Batch] = deque()  # oldest first
        self._cursor = 0  # id of the newest row in flight
        self._read_past = 0  # batches read past the ones in flight since the last sweep
        self._next_tag = 0
        self._blocked = False  # the broker said it blocks our publishes (a resource alarm)
        self._timer = None  # the pending call of `_tick`, if any (at most one)

    def run(self) -> None:
        # A batch is hundreds of messages: one send() for it, not three per message. Installed
        # here, by the process that relays, not on import (see pika_writes).
        pika_writes.install()
        super().run()

    def describe(self) -> str:
        return f"exchange {self.exchange}"

    # --- the hooks of base.Relay --------------------------------------------------------------

    def serve(self) -> None:
        # Several nodes: each new connection goes to the next one, so a relay whose node died
        # moves on to another instead of waiting for it.
        nodes = connection_parameters(self.url, heartbeat=self.amqp_heartbeat, name="outbox-relay")
        params = nodes[self.stats.reconnects % len(nodes)]
        self._in_flight.clear()
        self._blocked = False
        self._connection = WatchedConnection(
            params,
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_close,
        )
        # Every second, whatever the relay waits for (the broker's confirms, a reconnect): it
        # beats, and an active relay shows its lock session it is alive.
        self._connection.on_tick = self._every_second
        self._connection.add_on_connection_blocked_callback(self._on_blocked)
        self._connection.add_on_connection_unblocked_callback(self._on_unblocked)
        self._timer = None
        if self._watched is not None:  # a commit wakes the relay in this ioloop too
            self.watch_wakeups(None, self._watched)
        try:
            self._connection.ioloop.start()
        finally:
            self._connection = None
            self._channel = None

    def ready_to_read(self) -> bool:
        if self._channel is None or not self._channel.is_open:
            return False
        if len(self._in_flight) >= self.max_in_flight:
            return False  # the next confirmation calls again
        # After SWEEP_EVERY batches read ahead: let them drain, then read from the oldest row.
        return not (self._in_flight and self._read_past >= SWEEP_EVERY)

    def read_after(self) -> int | None:
        return self._cursor if self._in_flight else None

    def awaiting_confirms(self) -> bool:
        return bool(self._in_flight)

    def end(self, drain: bool) -> None:
        self._maybe_close(force=not drain)

    def wake(self) -> None:
        connection = self._connection
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.ioloop.add_callback_threadsafe(self._maybe_close)

    def state(self) -> str:
        return "blocked" if self._blocked else "publishing"

    def watch_wakeups(self, old: int | None, new: int | None) -> None:
        if self._connection is None:
            return  # `serve` watches it in the next session's ioloop
        ioloop = self._connection.ioloop
        if old is not None:
            with contextlib.suppress(Exception):  # already closed: the poller forgot it
                ioloop.remove_handler(old)
        if new is not None:
            ioloop.add_handler(new, self._on_wakeup, ioloop.READ)

    def _on_wakeup(self, _fd: int, _events: int) -> None:
        # Idle: the pause is cut short. Waiting for confirms with room for another batch: the
        # new rows go out now, pipelined, instead of after those confirms.
        if self.woken():
            self._schedule(0)

    # --- the connection -----------------------------------------------------------------------

    def _on_open(self, connection: WatchedConnection) -> None:
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_open_error(self, connection: WatchedConnection, error: BaseException) -> None:
        self._closed_by = f"cannot connect: {error!r}"
        connection.ioloop.stop()

    def _on_close(self, connection: WatchedConnection, reason: BaseException) -> None:
        self._closed_by = self._closed_by or repr(reason)
        connection.ioloop.stop()

    def _on_channel_open(self, channel) -> None:
        self._channel = channel
        # Confirm tags count per channel, from 1: a new channel (after any reconnect) starts
        # again, and a count carried over from the old one would match no confirm at all.
        self._next_tag = 0
        channel.add_on_close_callback(self._on_channel_close)
        channel.add_on_return_callback(self._on_return)
        channel.exchange_declare(
            exchange=self.exchange,
            exchange_type="topic",
            durable=True,
            callback=lambda _frame: channel.confirm_delivery(
                self._on_confirm, callback=lambda _frame: self._on_ready()
            ),
        )

    def _on_ready(self) -> None:
        self._connected()
        self._schedule(0)

    def _on_channel_close(self, channel, reason: BaseException) -> None:
        self.lose(f"channel closed: {reason!r}")

    def _maybe_close(self, force: bool = False) -> None:
        """Close the connection, unless batches still wait for their confirms (then the last
        confirmation closes it)."""
        if self._in_flight and not force:
            return
        connection = self._connection
        if connection is not None and not (connection.is_closing or connection.is_closed):
            connection.close()
        elif connection is not None and connection.is_closed:
            connection.ioloop.stop()

    def _tick(self) -> None:
        self._timer = None
        pause = self.step()
        if pause is not None:
            self._schedule(pause)

    def _schedule(self, delay: float) -> None:
        if self._connection is not None:
            if self._timer is not None:  # one pending turn at most: this one replaces it
                self._connection.ioloop.remove_timeout(self._timer)
            self._timer = self._connection.ioloop.call_later(delay, self._tick)

    def _every_second(self) -> None:
        ready = self._channel is not None and self._channel.is_open
        self.heartbeat.beat(self.state() if ready else "connecting", self.stats)
        self.check_lock()

    def _on_blocked(self, connection, frame) -> None:
        self._blocked = True
        logger.warning(
            "the broker blocks publishing (%s); waiting for it",
            getattr(frame.method, "reason", "") or "resource alarm",
        )
        self.heartbeat.beat("blocked", self.stats)

    def _on_unblocked(self, connection, frame) -> None:
        self._blocked = False
        logger.info("the broker accepts publishing again")
        # Each batch in flight gets a whole deadline from now for its confirms.
        for batch in self._in_flight:
            self._arm_deadline(batch)

    # --- a batch, from publish to confirm -----------------------------------------------------

    def send(self, rows: list[Row]) -> None:
        # Reading from the oldest row again (nothing in flight) starts a new sweep.
        self._read_past = self._read_past + 1 if self._in_flight else 0
        batch = _Batch()
        traced = tracing.enabled()
        for outbox_id, routing_key, body, correlation_id, trace_context in rows:
            self._next_tag += 1
            batch.ids[self._next_tag] = outbox_id
            headers = None
            if traced and trace_context:
                publish = tracing.tracer().start_span(
                    "cqrs.publish",
                    context=tracing.deserialize(trace_context),
                    kind=SpanKind.PRODUCER,
                    attributes={"messaging.system": "rabbitmq", "outbox.id": outbox_id,
                                "messaging.destination.name": self.exchange,
                                "messaging.rabbitmq.destination.routing_key": routing_key},
                )  # fmt: skip
                batch.spans.append(publish)
                headers = tracing.inject_headers({}, set_span_in_context(publish))
            encoded = body.encode()
            self._channel.basic_publish(
                exchange=self.exchange,
                routing_key=routing_key,
                body=encoded,
                properties=pika.BasicProperties(
                    content_type="text/plain",
                    delivery_mode=2,
                    message_id=str(outbox_id),
                    correlation_id=correlation_id or None,
                    headers=signing.signed_headers(encoded, headers),  # CQRS_SIGNING_KEY set
                ),
                mandatory=True,
            )
        self._cursor = rows[-1][0]
        self._arm_deadline(batch)
        self._in_flight.append(batch)

    def _arm_deadline(self, batch: _Batch) -> None:
        if batch.timer is not None:
            self._connection.ioloop.remove_timeout(batch.timer)
        batch.timer = self._connection.ioloop.call_later(
            self.confirm_timeout, lambda: self._on_confirm_timeout(batch)
        )

    def _on_confirm(self, frame) -> None:
        method = frame.method
        acked = isinstance(method, pika.spec.Basic.Ack)
        for batch in self._in_flight:
            if method.multiple:
                tags = [t for t in batch.ids if t <= method.delivery_tag]
            else:
                tags = [method.delivery_tag] if method.delivery_tag in batch.ids else []
            for tag in tags:
                (batch.acked if acked else batch.nacked).append(batch.ids.pop(tag))
        # Batches finish in the order they were published, as their rows' ids go.
        while self._in_flight and not self._in_flight[0].ids:
            self._finish(self._in_flight.popleft())

    def _finish(self, batch: _Batch) -> None:
        if batch.timer is not None:
            self._connection.ioloop.remove_timeout(batch.timer)
        for publish in batch.spans:  # from the publish to the broker's confirm
            publish.end()
        if batch.nacked:
            logger.warning("broker refused %s messages; they will be sent again", len(batch.nacked))
            self.refused(batch.nacked)
        self.confirmed(batch.acked)
        if self.stop.is_set():
            self._maybe_close()
        else:
            self._schedule(0)

    def _on_confirm_timeout(self, batch: _Batch) -> None:
        batch.timer = None
        if self._blocked:  # the broker said why; unblocking re-arms the deadline
            return
        self._closed_by = f"no publisher confirms within {self.confirm_timeout:g}s"
        self._in_flight.clear()
        # Not the closing handshake: on a dead link it would never complete.
        if self._connection is not None and self._connection.is_open:
            self._connection.abort(ConnectionLost(self._closed_by))
        else:
            self._maybe_close(force=True)

    def _on_return(self, channel, method, properties, body) -> None:
        # The broker took it (and confirms it) but no queue was bound to its routing key:
        # nobody is replicating that CQRS_ID. Not an error of the relay's.
        self.stats.returned += 1
        if self.stats.returned in (1, 10, 100) or self.stats.returned % 1000 == 0:
            logger.warning(
                "no queue bound for routing key %r (%s unroutable so far)",
                method.routing_key,
                self.stats.returned,
            )
