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

The lifecycle (lock, reconnects, heartbeat, bookkeeping, idle polling) is `base.Relay`'s; this
module is the transport's part: a session is a connection and a loop around `step`, and a batch
is one confirmed `send_task` after the other.
"""

from __future__ import annotations

from kombu.exceptions import OperationalError

from django_tools import signing, tracing
from django_tools.outbox.relays.base import ConnectionLost, Relay, Row
from django_tools.wire import APPLY_TASK


class CeleryRelay(Relay):
    """REPLICATION_MODE=celery: one `replica.apply_event` task per change."""

    lost = (ConnectionLost, OperationalError)  # OperationalError: the broker went away
    what = "Celery broker connection"

    def __init__(self, app, queue: str, **options) -> None:
        super().__init__(**options)
        self.app = app
        self.queue = queue
        self._producer = None

    def describe(self) -> str:
        return f"Celery queue {self.queue}"

    def serve(self) -> None:
        connection = self.app.connection_for_write()
        try:
            # Each node of the broker URL once, at once (the session's backoff paces retries).
            connection.ensure_connection(max_retries=len(connection.alt), interval_start=0)
            self._producer = self.app.amqp.Producer(connection)
            while (pause := self.step()) is not None:
                if self.waker.wait(pause):  # a commit or `request_stop` ends it early
                    self.wakeups_came()
        except BaseException:
            connection.collect()  # no closing handshake: the link may be dead
            raise
        finally:
            self._producer = None
        connection.release()

    def wake(self) -> None:
        if self.waker is not None:
            self.waker.interrupt()

    def send(self, rows: list[Row]) -> None:
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
                        producer=self._producer,
                        # Signed when CQRS_SIGNING_KEY is set; the task checks it.
                        headers=signing.signed_headers(body.encode(), {"outbox_id": outbox_id}),
                        retry=False,
                        confirm_timeout=self.confirm_timeout,
                    )
                confirmed.append(outbox_id)
        finally:
            # Whatever the broker confirmed is published, even if a later one failed.
            self.confirmed(confirmed)
