"""The relay of `REPLICATION_MODE=celery`: outbox rows → one Celery task per change.

This is the seed's original pattern (the master calls a Celery task of the replica for each
change), kept as a second mode so the lab can compare both. It goes through the same outbox, so
it keeps the same guarantee: a row is marked published only after the broker confirmed its task
message (Celery's `confirm_publish`), at least once, in id order, one relay at a time. Celery's
producer waits for each confirm: this relay does not pipeline.

Each session has a connection of its own (not one of Celery's pooled producers): a confirm that
does not come within `confirm_timeout` (OUTBOX_CONFIRM_TIMEOUT) — a dead link, on which nothing
else would ever say so — ends the session, and its connection is dropped without the closing
handshake. A pooled connection would go back to the pool with a confirm still owed, and py-amqp
takes any confirm as the next publish's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from django.db import DatabaseError, connections
from kombu.exceptions import OperationalError

from django_tools import signing, tracing
from django_tools.heartbeat import Heartbeat
from django_tools.outbox.metrics import OUTBOX_PUBLISHED
from django_tools.outbox.relays.base import RelayStats, wait_for_lock
from django_tools.outbox.relays.lock import RelayLock
from django_tools.outbox.selectors import unpublished_rows
from django_tools.outbox.services import mark_published
from django_tools.reconnect import keep_running
from django_tools.wire import APPLY_TASK

logger = logging.getLogger("django_tools.outbox")


class CeleryRelay:
    def __init__(
        self,
        app,
        queue: str,
        *,
        batch_size: int = 500,
        poll_min: float = 0.005,
        poll_max: float = 0.05,
        confirm_timeout: float = 5.0,
        stop: threading.Event | None = None,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.app = app
        self.queue = queue
        self.batch_size = batch_size
        self.poll_min = poll_min
        self.poll_max = poll_max
        self.confirm_timeout = confirm_timeout
        self.stop = stop or threading.Event()
        self.stats = RelayStats()
        self.heartbeat = heartbeat or Heartbeat.disabled()

    def describe(self) -> str:
        return f"Celery queue {self.queue}"

    def request_stop(self) -> None:
        self.stop.set()

    def run(self) -> None:
        lock = RelayLock()
        try:
            if not wait_for_lock(lock, self.stop, self.heartbeat):
                return
            keep_running(
                self._session,
                stop=self.stop,
                retry_on=(OperationalError,),  # the broker went away
                logger=logger,
                what="Celery broker connection",
                on_retry=lambda _exc: self._count_reconnect(),
                beat=lambda: self.heartbeat.beat("disconnected", self.stats),
            )
        finally:
            lock.release()
            connections.close_all()  # this thread's, on the way out

    def _count_reconnect(self) -> None:
        self.stats.reconnects += 1
        self.heartbeat.beat("disconnected", self.stats)

    def _session(self, connected: Callable[[], None]) -> None:
        connection = self.app.connection_for_write()
        try:
            # Each node of the broker URL once, at once (the session's backoff paces retries).
            connection.ensure_connection(max_retries=len(connection.alt), interval_start=0)
            self._publish_until_stopped(self.app.amqp.Producer(connection), connected)
        except BaseException:
            connection.collect()  # no closing handshake: the link may be dead
            raise
        connection.release()

    def _publish_until_stopped(self, producer, connected: Callable[[], None]) -> None:
        pause = self.poll_min
        while not self.stop.is_set():
            self.heartbeat.beat("publishing", self.stats)
            try:
                sent = self._batch(producer)
            except DatabaseError as exc:
                logger.warning("outbox unreadable (%r); retrying", exc)
                connections["default"].close()
                self.stop.wait(1.0)
                continue
            connected()  # the broker took (or had nothing to take) a batch
            if sent:
                pause = self.poll_min
            else:
                self.stop.wait(pause)
                pause = min(self.poll_max, pause * 2)

    def _batch(self, producer) -> int:
        rows = unpublished_rows(self.batch_size)
        if not rows:
            return 0
        confirmed = []
        try:
            for outbox_id, _routing_key, body, _correlation_id, trace_context in rows:
                # Traced: the Celery instrumentation carries this span's context in the
                # task's headers to the worker that applies it.
                parent = tracing.deserialize(trace_context) if trace_context else None
                with tracing.span("cqrs.publish", parent, **{"outbox.id": outbox_id}):
                    self.app.send_task(
                        APPLY_TASK,
                        args=[body],
                        queue=self.queue,
                        producer=producer,
                        # Signed when CQRS_SIGNING_KEY is set; the task checks it.
                        headers=signing.signed_headers(body.encode(), {"outbox_id": outbox_id}),
                        retry=False,
                        confirm_timeout=self.confirm_timeout,
                    )
                confirmed.append(outbox_id)
        finally:
            # Whatever the broker confirmed is published, even if a later one failed.
            if confirmed:
                mark_published(confirmed)
                OUTBOX_PUBLISHED.inc(len(confirmed))
                self.stats.published += len(confirmed)
                self.stats.batches += 1
                self.stats.last_confirmed_at = time.time()
        return len(confirmed)
