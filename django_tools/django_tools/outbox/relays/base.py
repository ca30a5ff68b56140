"""What every relay is: the seam between the outbox and a way of sending its rows.

A relay reads the oldest unpublished outbox rows (`selectors.unpublished_rows`), sends them, and
marks published (`services.mark_published`) only what the broker confirmed: at least once, in id
order, one relay at a time (`lock.RelayLock`; a second one stands by). Two implementations:

- `amqp.AmqpRelay` (REPLICATION_MODE=cqrs): django-cqrs messages on the exchange, pipelined
  publisher confirms;
- `celery.CeleryRelay` (REPLICATION_MODE=celery): one Celery task per change, Celery's confirms.

Both reconnect with `django_tools.reconnect.keep_running`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Protocol

import psycopg
from django.db import DatabaseError

from django_tools.heartbeat import Heartbeat
from django_tools.outbox.relays.lock import RelayLock

logger = logging.getLogger("django_tools.outbox")


class ConnectionLost(Exception):
    """The relay's connection ended (broker gone, channel closed, confirms late, lock lost)."""


@dataclass
class RelayStats:
    published: int = 0
    batches: int = 0
    returned: int = 0
    reconnects: int = 0
    last_confirmed_at: float | None = None


class Relay(Protocol):
    batch_size: int
    stats: RelayStats
    stop: threading.Event
    heartbeat: Heartbeat

    def run(self) -> None:
        """Relay until `stop` is set (or `request_stop()`): wait for the lock, then send."""

    def request_stop(self) -> None:
        """Finish the batch in flight and leave; safe from a signal handler."""

    def describe(self) -> str:
        """Where the rows go, for the log line at start."""


def wait_for_lock(
    lock: RelayLock, stop: threading.Event, heartbeat: Heartbeat | None = None
) -> bool:
    """Block until this process holds the relay lock (True) or `stop` is set (False); the
    heartbeat says `standby` meanwhile."""
    announced = False
    while not stop.is_set():
        try:
            if lock.try_acquire():
                logger.info("relay lock taken: publishing the outbox")
                return True
        except (DatabaseError, psycopg.Error) as exc:
            logger.warning("cannot reach the database for the relay lock: %r", exc)
        if heartbeat is not None:
            heartbeat.beat("standby")
        if not announced:
            logger.info("another relay is publishing; standing by until it stops")
            announced = True
        stop.wait(1.0)
    return False
