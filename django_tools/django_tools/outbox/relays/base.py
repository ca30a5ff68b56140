"""What every relay is, written once: the lifecycle of a relay, with the transports as hooks.

A relay reads the oldest unpublished outbox rows (`selectors.unpublished_rows`), sends them, and
marks published (`services.mark_published`) only what the broker confirmed: at least once, in id
order, one relay at a time (`lock.RelayLock`; a second one stands by). As kombu does for its
transports, the base class `Relay` owns the algorithm and the transports fill in small hooks:

- `Relay.run`: wait for the lock (heartbeat `standby`), then run sessions with
  `django_tools.reconnect.keep_running` (backoff, reconnect count, heartbeat `disconnected`),
  release the lock on the way out;
- a session (`_session`) first makes sure the lock is still this relay's (else stands by again),
  then hands over to the transport's `serve`, which connects and calls `step` until the session
  ends; a session that ends without `stop` is a lost connection (`ConnectionLost`: retried);
- `step` is one turn of the relay: stop → drain and close; heartbeat; the lock still held
  (asked every third of OUTBOX_LOCK_TIMEOUT, which keeps its PostgreSQL session busy; lost → the
  session ends and the relay stands by); read a batch (a database error: retry in a second);
  `send` it; nothing to read → poll again after a pause doubling from `poll_min` to `poll_max`
  (`poll_max` at once while it listens for wake-ups), or at once when a commit wakes the relay
  (`woken`);
- wake-ups (`django_tools.outbox.wake`): the session listens (`Waker.listen`, PostgreSQL
  LISTEN/NOTIFY or a local socket) before its first read, so a commit after that read wakes it;
  an idle relay woken reads at once, and so does one whose batches wait for their confirms if it
  may send another; otherwise it was going to read anyway; the poll stays as the fallback of a
  lost wake-up;
- `confirmed` is the publish bookkeeping: the confirmed rows are marked published in groups
  (`_mark`): at once when a batch's worth waits, otherwise at the first turn `mark_delay` after
  the oldest was confirmed, and at the end of every session; counted when marked
  (`OUTBOX_PUBLISHED`, `stats.published`). Until then reads skip them (`read_after` is raised
  past them). At low load one UPDATE per event was the relay's costliest step, run in the very
  milliseconds the event crossed the broker and the consumer on the same cores; a crash before
  the mark sends them again, as a crash before any mark always did (replicas ignore duplicates).

The transports:

- `amqp.AmqpRelay` (REPLICATION_MODE=cqrs): django-cqrs messages on the exchange, pipelined
  publisher confirms; its pika ioloop schedules `step` and the broker's confirms call
  `confirmed`;
- `celery.CeleryRelay` (REPLICATION_MODE=celery): one Celery task per change, Celery's confirms;
  a plain loop around `step`.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from django.db import DatabaseError, connections

from django_tools.heartbeat import Heartbeat
from django_tools.outbox.metrics import OUTBOX_PUBLISHED
from django_tools.outbox.relays.lock import RelayLock
from django_tools.outbox.selectors import unpublished_rows
from django_tools.outbox.services import mark_published
from django_tools.outbox.wake import Waker, waker_for
from django_tools.reconnect import keep_running

logger = logging.getLogger("django_tools.outbox")

#: (outbox id, routing key, body, correlation id, trace context): an unpublished row.
Row = tuple[int, str, str, str | None, str | None]

#: Pause before reading an outbox the database would not give us again.
DATABASE_RETRY = 1.0
#: The longest a confirmed row waits to be marked published, unless a batch's worth waits
#: (then at once). Rows committed out of id order (PostgreSQL) may wait as long for a read
#: from the oldest row again; the outbox backlog counts confirmed rows for as long.
MARK_DELAY = 0.05
#: How early an idle poll's timer may fire and still be the poll (`step`'s `polled`).
POLL_EARLY = 0.01


class ConnectionLost(Exception):
    """The relay's connection ended (broker gone, channel closed, confirms late, lock lost)."""


@dataclass
class RelayStats:
    confirmed: int = 0  # rows the broker confirmed (marked published with the next group)
    published: int = 0  # rows marked published
    batches: int = 0
    returned: int = 0
    reconnects: int = 0
    reads_skipped: int = 0  # turns that knew the outbox had nothing new for them (`step`)
    carried: int = 0  # rows sent as their wake-ups carried them, without a read (`step`)
    last_confirmed_at: float | None = None


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


class Relay(ABC):
    """The lifecycle of every relay (see the module): lock, sessions, turns, bookkeeping.

    Subclasses implement `describe`, `serve` and `send`, and override the other hooks
    (`ready_to_read`, `read_after`, `awaiting_confirms`, `end`, `wake`, `state`,
    `watch_wakeups`) when their transport has something to say there."""

    #: What a session raises when its connection is lost (retried after the backoff).
    lost: tuple[type[BaseException], ...] = (ConnectionLost,)
    #: The connection, in the log line of a retry.
    what = "broker connection"

    def __init__(
        self,
        *,
        batch_size: int = 500,
        poll_min: float = 0.005,
        poll_max: float = 0.05,
        confirm_timeout: float = 5.0,
        stop: threading.Event | None = None,
        heartbeat: Heartbeat | None = None,
        lock_timeout: float | None = None,
        lock: RelayLock | None = None,
        waker: Waker | None = None,
        mark_delay: float = MARK_DELAY,
    ) -> None:
        self.batch_size = batch_size
        self.mark_delay = mark_delay
        self.poll_min = poll_min
        self.poll_max = poll_max
        self.confirm_timeout = confirm_timeout
        self.stop = stop or threading.Event()
        self.stats = RelayStats()
        self.heartbeat = heartbeat or Heartbeat.disabled()
        self.lock_timeout = lock_timeout  # None: OUTBOX_LOCK_TIMEOUT
        self.lock = lock  # None: a RelayLock of its own, made by `run`
        self.waker = waker  # None: the database's kind (`wake.waker_for`), made by `run`
        self._idle = False  # the pause `step` returned is an idle one (a wake-up cuts it)
        self._watched: int | None = None  # the waker's descriptor the transport watches
        self._closed_by: str | None = None  # why the current session ended
        self._connected: Callable[[], None] = lambda: None
        self._idle_pause = poll_min
        self._lock_checked = time.monotonic()
        self._unmarked: list[int] = []  # confirmed, not marked published yet
        self._unmarked_since = 0.0  # when the oldest of them was confirmed
        # The last read took every unpublished row past its cursor, and no wake-up came since
        # it began: a turn that is neither a wake-up's nor the idle poll has nothing to read.
        self._drained = False
        self._woken = False
        self._poll_due = 0.0  # when the idle pause's poll is due
        self._read_after = 0  # the row the last read started after (0: the oldest)
        self._carried: list[Row] = []  # rows wake-ups carried, not sent yet (`wakeups_came`)
        self._high = 0  # the highest row this session read or sent
        self._read_at = 0.0  # when the last read began (monotonic)

    # --- the lifecycle (the base's) -----------------------------------------------------------

    def run(self) -> None:
        """Relay until `stop` is set: wait for the lock, then publish, reconnecting as needed."""
        if self.lock is None:
            self.lock = RelayLock(idle_timeout=self.lock_timeout)
        if self.waker is None:
            self.waker = waker_for(self.lock_timeout)
        try:
            if not wait_for_lock(self.lock, self.stop, self.heartbeat):
                return
            keep_running(
                self._session,
                stop=self.stop,
                retry_on=self.lost,
                logger=logger,
                what=self.what,
                on_retry=lambda _exc: self._count_reconnect(),
                beat=lambda: self.heartbeat.beat("disconnected", self.stats),
            )
        finally:
            self._stop_listening()  # before the lock: the next holder listens
            self.lock.release()
            self.waker.dispose()
            connections.close_all()  # this thread's, on the way out

    def request_stop(self) -> None:
        """Finish the batch in flight and leave; safe from a signal handler."""
        self.stop.set()
        self.wake()

    def _count_reconnect(self) -> None:
        self.stats.reconnects += 1
        self.heartbeat.beat("disconnected", self.stats)

    def _session(self, connected: Callable[[], None]) -> None:
        """One connection, publishing until it ends; raises ConnectionLost unless stopped."""
        if not self.lock.still_held():
            logger.warning("lost the relay lock; waiting to take it again")
            self._stop_listening()
            self.lock.release()
            if not wait_for_lock(self.lock, self.stop, self.heartbeat):
                return
        self._connected = connected
        self._closed_by = None
        self._idle_pause = self.poll_min
        self._lock_checked = time.monotonic()
        self._idle = False
        self._drained = False  # a new session reads at once
        self._carried, self._high = [], 0
        self._listen()  # before the first read: a commit after it wakes the relay
        try:
            self.serve()
        finally:
            self._mark()  # whatever ended the session, the broker confirmed these
        if not self.stop.is_set():
            raise ConnectionLost(self._closed_by or "connection closed")

    def step(self) -> float | None:
        """One turn: the pause before the next one, or None when the transport must not schedule
        it (the session ends, or a confirm will call `step` again)."""
        # The idle poll's turn (a lost wake-up's fallback), not a wake-up's nor a mark's: timers
        # may fire a little early.
        polled = self._idle and time.monotonic() >= self._poll_due - POLL_EARLY
        self._idle = False
        if self.stop.is_set():
            self.end(drain=True)
            return None
        self.heartbeat.beat(self.state(), self.stats)
        if not self.check_lock() or not self.ready_to_read():
            return None
        if self._unmarked and time.monotonic() - self._unmarked_since >= self.mark_delay:
            self._mark()
        after = self.read_after()
        if self._unmarked:  # sent and confirmed: not to be read again
            after = max(after or 0, max(self._unmarked))
        carried, self._carried = self._carried, []
        if carried:
            if self._all_new(carried):
                return self._send_carried(carried)
            self._woken = True  # rows it may have read already: read instead
        if self._nothing_new(polled, after or 0):
            # At low load, the turns right after a send, its confirm and its mark: the last read
            # emptied the outbox and no commit woke the relay since. Each read found nothing
            # (two outbox queries per event, the relay's busiest cost at 200 writes/s).
            self.stats.reads_skipped += 1
            if self.awaiting_confirms():
                return None  # the last confirm calls again
            self._connected()
            return self._idle_for(self.poll_max)
        self._woken = False  # a wake-up from now on may be a row this read does not see
        self._read_after = after or 0
        self._read_at = time.monotonic()
        try:
            rows = unpublished_rows(self.batch_size, after=after)
        except DatabaseError as exc:
            logger.warning("outbox unreadable (%r); retrying", exc)
            connections["default"].close()
            self._drained = False
            return DATABASE_RETRY
        self._drained = getattr(rows, "drained", False)
        if rows:
            self._high = max(self._high, rows[-1][0])
            self._idle_pause = self.poll_min
            self.send(rows)
            self._connected()  # the broker took a batch: the next fault retries from the start
            return 0.0
        if self.awaiting_confirms():
            return None  # the last confirm calls again
        self._connected()
        if self._watched is not None:
            # Commits wake this relay: the poll only makes up for a lost wake-up, so it waits
            # the longest pause at once. Polling from `poll_min` read the outbox again
            # between every two commits at low load (three reads per event, two of them
            # empty), CPU taken from the broker and the consumer in the very milliseconds the
            # event crosses them.
            return self._idle_for(self.poll_max)
        pause = self._idle_pause
        self._idle_pause = min(self.poll_max, pause * 2)
        return self._idle_for(pause)

    def _idle_for(self, pause: float) -> float:
        """Idle until the poll `pause` from now, or until confirmed rows are due to be marked
        (`_until_mark`): that turn is not the poll."""
        self._idle = True
        self._poll_due = time.monotonic() + pause
        return self._until_mark(pause)

    def wakeup_came(self) -> None:
        """A wake-up without its rows came, or may have come unseen (a lock check's query may
        take one off the socket): the next turn reads."""
        self._woken = True

    def wakeups_came(self) -> None:
        """The waker took wake-ups (`woken`, or a transport that waits on the waker itself):
        if every one of them carried its row, the next turn may send those rows without a read
        (`_all_new`); otherwise it reads."""
        carried = self.waker.take_carried()
        if carried:
            self._carried.extend(carried)
        else:
            self.wakeup_came()

    def _all_new(self, carried: list[Row]) -> bool:
        """Whether rows that wake-ups carried are all the outbox has that this relay has not
        read: the last read took every row past its cursor (`_drained`), every wake-up since
        carried its rows (none asked for a read), and these are above anything read or sent
        this session — a row at or below may be one a read already sent (its commit raced the
        read), and a read from the cursor would not see it again: those go to a read. At most
        a batch of them, and only within `poll_max` of the last read: a row no wake-up
        announces (written on another database alias, or by hand) is found by a read, and a
        steady stream of carried rows would otherwise keep the idle poll from ever coming.
        Where ids come in commit order without gaps (`Waker.gapless`: SQLite, whose wake-ups
        are datagrams a full queue drops), the rows must follow the highest one on, id after
        id: a gap is a row whose wake-up was lost."""
        ids = sorted(row[0] for row in carried)
        return (
            self._drained
            and not self._woken
            and len(carried) <= self.batch_size
            and ids[0] > self._high
            and time.monotonic() - self._read_at < self.poll_max
            and (
                not self.waker.gapless
                or ids == list(range(self._high + 1, self._high + 1 + len(ids)))
            )
        )

    def _send_carried(self, carried: list[Row]) -> float:
        """Send what the wake-ups carried, as if a read had found it (in id order)."""
        rows = sorted(carried, key=lambda row: row[0])
        self._high = rows[-1][0]
        self.stats.carried += len(rows)
        self._idle_pause = self.poll_min
        self.send(rows)
        self._connected()
        return 0.0

    def _nothing_new(self, polled: bool, after: int) -> bool:
        """Whether this turn can skip its read (from the row `after`): commits wake this relay
        (so the idle poll is only their fallback, and this turn is not it), the last read was
        drained, no wake-up has come since it began, and this read would start no lower than
        it did. Lower, it could find a row committed after a higher one (PostgreSQL's ids
        are not in commit order) whose wake-up the last read took without seeing it: that
        read happens, once the confirmed rows above it are marked. A row the broker refused,
        or whose mark failed, ends `drained`; a lost wake-up waits for the idle poll."""
        return (
            self._watched is not None
            and not polled
            and self._drained
            and not self._woken
            and after >= self._read_after
        )

    def _until_mark(self, pause: float) -> float:
        """An idle pause, cut short when confirmed rows are due to be marked before it ends."""
        if not self._unmarked:
            return pause
        due = self._unmarked_since + self.mark_delay - time.monotonic()
        return max(0.0, min(pause, due))

    def check_lock(self) -> bool:
        """Whether this relay still holds the lock; asked of the database at most every third
        of the lock's timeout (which also keeps its session from looking idle to PostgreSQL).
        A relay that lost it (paused longer than the timeout: a standby took over) ends the
        session and stands by."""
        if time.monotonic() - self._lock_checked < self.lock.check_every:
            return True
        self._lock_checked = time.monotonic()
        if self.lock.still_held():
            self.waker.keepalive()  # a session of its own on PostgreSQL, as idle as the lock's
            # Its query may have taken a wake-up off the socket unseen: read on the next turn.
            self.wakeup_came()
            self._watch()  # a broken one is unwatched before `listen` replaces it
            self._listen()
            return True
        self.lose("relay lock lost")
        return False

    @property
    def idle(self) -> bool:
        """Whether the relay is in an idle pause (nothing to read at its last turn)."""
        return self._idle

    def woken(self) -> bool:
        """The waker's descriptor is readable: take the wake-ups; whether the transport must
        call `step` now: the relay was idle (cut the pause short), or its batches wait for
        their confirms and it may send another one (a pipelining transport: the new rows go
        out now, not after those confirms). Otherwise the relay reads anyway when it can."""
        woken = self.waker.consume()
        self._watch()  # a broken channel: its descriptor is not watched any more
        if not woken:
            return False
        self.wakeups_came()
        return self._idle or (self.awaiting_confirms() and self.ready_to_read())

    def _listen(self) -> None:
        """Listen for wake-ups, and have the transport watch the descriptor that says so."""
        self.waker.listen()
        self._watch()

    def _watch(self) -> None:
        fd = self.waker.fileno()
        if fd != self._watched:
            self.watch_wakeups(self._watched, fd)
            self._watched = fd

    def _stop_listening(self) -> None:
        if self._watched is not None:
            self.watch_wakeups(self._watched, None)
            self._watched = None
        if self.waker is not None:
            self.waker.close()

    def lose(self, reason: str) -> None:
        """End the session at once, for `reason` (the first reason given is the one logged)."""
        if self._closed_by is None:
            self._closed_by = reason
        self.end(drain=False)

    def confirmed(self, ids: list[int]) -> None:
        """The broker confirmed these rows (in id order): they are marked published with the
        next group (`_mark`), at once when a batch's worth waits."""
        if not ids:
            return
        if not self._unmarked:
            self._unmarked_since = time.monotonic()
        self._unmarked.extend(ids)
        self.stats.confirmed += len(ids)
        self.stats.batches += 1
        self.stats.last_confirmed_at = time.time()
        if len(self._unmarked) >= self.batch_size or self.mark_delay <= 0:
            self._mark()

    def refused(self, ids: list[int]) -> None:
        """The broker refused these rows (a nack): unpublished, below the cursor; the next
        turn reads from the oldest row again and sends them."""
        if ids:
            self._drained = False

    def _mark(self) -> None:
        """Mark the confirmed rows published and count them. A database error leaves them
        unpublished: they go out again later, and replicas ignore the duplicates."""
        ids, self._unmarked = self._unmarked, []
        if not ids:
            return
        try:
            mark_published(ids)
        except DatabaseError as exc:
            logger.warning("could not mark %s rows published (%r)", len(ids), exc)
            connections["default"].close()
            self._drained = False  # they are below the cursor: the next read starts before them
            return
        OUTBOX_PUBLISHED.inc(len(ids))
        self.stats.published += len(ids)

    # --- the hooks (the transport's) ----------------------------------------------------------

    @abstractmethod
    def describe(self) -> str:
        """Where the rows go, for the log line at start."""

    @abstractmethod
    def serve(self) -> None:
        """One session: connect, call `step` until it returns None (waiting the pause it
        returns in between), close. Raise one of `lost` when the connection fails."""

    @abstractmethod
    def send(self, rows: list[Row]) -> None:
        """Send a batch, in order; pass what the broker confirms to `confirmed` (before
        returning, or later when the confirms arrive)."""

    def ready_to_read(self) -> bool:
        """Whether to read a batch now (a pipelining transport: not while enough are in flight)."""
        return True

    def read_after(self) -> int | None:
        """Read rows with an id above this one (those in flight), or None: the oldest."""
        return None

    def awaiting_confirms(self) -> bool:
        """Whether sent batches wait for their confirms (then there is no idle pause)."""
        return False

    def end(self, drain: bool) -> None:
        """End the session: after the confirms in flight (`drain`), or at once."""
        return None  # a plain loop around `step` leaves anyway: step returns None

    def wake(self) -> None:
        """`stop` was set from another thread: make the session notice."""
        return None  # a loop that waits on `stop` notices by itself

    def state(self) -> str:
        """The heartbeat's state while publishing."""
        return "publishing"

    def watch_wakeups(self, old: int | None, new: int | None) -> None:
        """Stop watching descriptor `old`, watch `new` (None: none) and call `woken` when it is
        readable. A loop transport that waits with `Waker.wait` watches nothing here."""
        return None
