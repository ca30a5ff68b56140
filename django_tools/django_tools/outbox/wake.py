"""Waking the relay when a transaction that wrote outbox events commits, instead of letting the
event wait for the relay's next poll.

Two ends, one per process, chosen by the database's vendor:

- the writer's (`after_write`, called by `writer.enqueue` and `services.republish` each time
  they wrote rows; a one-row write carries its row instead: below): at most one plain
  wake-up per transaction, and only if it commits;
  - PostgreSQL: `NOTIFY` on `channel()` inside the transaction; the server delivers it at commit
    and drops it on rollback (of the transaction, or of the savepoint that issued it). One
    statement per transaction, not per event: a transaction that already notified (its mark is
    in Django's `on_commit` list, which a rolled-back savepoint loses together with its
    `NOTIFY`) does not notify again. Not `pg_notify` after the commit: a NOTIFY needs a
    transaction id, so on its own it would be a second commit, with its own WAL flush.
    A write of one row (a REST write, a `save()`) wakes the relay with the row itself instead
    (`carried_payload`, signed): `pg_notify` after its INSERT, whose id it returns, and the
    payload is the row as the relay's read would return it — the relay publishes it without
    reading the outbox (`base.Relay.step`). A row too large for a payload (8,000 bytes) wakes
    with an empty one;
  - SQLite: after the commit (`on_commit`), one datagram to the relay's UNIX socket beside the
    database (`var/produtos.relay.wake`, beside `var/produtos.relay.lock`): empty, or, for a
    write of one row, the same signed payload as PostgreSQL's. Each carried row is its own
    `on_commit` callback, registered where the row was written, so that a rolled-back
    savepoint drops its row's wake-up with it (one callback for the whole transaction would
    announce a row that never committed). Non-blocking and best effort: no relay bound there,
    a stale socket file, a full queue (the relay is busy and has not read its wake-ups yet) —
    the write does not care, and a row whose datagram was lost is found by a read;
- the relay's (`Waker`, made by `waker_for`): a file descriptor that becomes readable when a
  commit woke it. `base.Relay` owns what happens then (an idle relay reads at once; a busy one
  reads anyway); the transports only wait on the descriptor (`AmqpRelay`: pika's ioloop;
  `CeleryRelay`: `Waker.wait`). PostgreSQL: `LISTEN` on a connection of its own (with the
  relay lock's `idle_session_timeout`, kept alive when the lock is checked: a paused relay's
  session ends and cannot hold the server's notification queue back); SQLite: the socket,
  bound only by the relay holding the relay lock.

Polling stays: a lost wake-up (the listening connection dropped, a writer on another
database alias, a datagram the kernel refused) costs at most the poll interval
(`OUTBOX_POLL_MAX`), never an event.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import select
import socket
from pathlib import Path

import orjson
import psycopg
from django.conf import settings
from django.db import connections, router, transaction
from django.utils.crypto import constant_time_compare, salted_hmac

logger = logging.getLogger("django_tools.outbox")

#: What the payloads are signed with (`carried_payload`), salted from the SECRET_KEY.
_SALT = "django_tools.outbox.wake.carried"
#: The PostgreSQL channel of the wake-ups is this, then a tag derived from the SECRET_KEY
#: (`channel`).
CHANNEL_PREFIX = "django_tools_outbox_"


def channel() -> str:
    """The PostgreSQL channel of the wake-ups: any session may LISTEN on a channel it can name,
    and a wake-up carries its row (`carried_payload`), body and all; named from the SECRET_KEY,
    only this project's processes know it. The name is in the text of the relay's `LISTEN` and
    of a plain `NOTIFY`, which another role sees in `pg_stat_activity` only as a superuser or a
    member of `pg_read_all_stats`: such a monitoring role could listen, not forge (payloads are
    signed). A carried wake-up passes it as a parameter. Writers and the relay must share the
    SECRET_KEY; while they do not (a key being changed), the relay polls."""
    return _channel(settings.SECRET_KEY)


@functools.lru_cache(maxsize=4)
def _channel(secret: str) -> str:
    return CHANNEL_PREFIX + salted_hmac(_SALT + ".channel", "", secret=secret).hexdigest()[:24]


#: Longest path a UNIX socket address takes (sun_path, with its NUL).
_MAX_SOCKET_PATH = 107


# --- the writer's end ---------------------------------------------------------------------


class _Wake:
    """The `on_commit` callback of a transaction that wrote events, and the mark that it did;
    with a payload, the wake-up of one row (SQLite)."""

    __slots__ = ("address", "payload")

    def __init__(self, address: str | None, payload: bytes = b"") -> None:
        self.address = address  # None: PostgreSQL, whose NOTIFY is already in the transaction
        self.payload = payload

    def __call__(self) -> None:
        if self.address is not None:
            poke(self.address, self.payload)


def after_write(connection, carried: str = "") -> None:
    """`connection`'s transaction wrote outbox rows: wake the relay when it commits (once per
    transaction; on SQLite, once more for each one-row write whose row `carried` holds, as
    `carried_payload` made it). Never fails the write because of the relay."""
    in_transaction = connection.in_atomic_block
    if carried and connection.vendor != "postgresql":
        address = local_address(connection)
        if address is not None:
            transaction.on_commit(_Wake(address, carried.encode()), using=connection.alias)
        return
    if in_transaction and any(
        isinstance(entry[1], _Wake) and not entry[1].payload for entry in connection.run_on_commit
    ):
        return  # this transaction already wakes the relay
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"NOTIFY {channel()}")
        if in_transaction:
            transaction.on_commit(_Wake(None), using=connection.alias)
        return
    address = local_address(connection)
    if address is not None:
        # Outside a transaction (autocommit) Django runs it at once: the rows are committed.
        transaction.on_commit(_Wake(address), using=connection.alias)


def local_address(connection) -> str | None:
    """The relay's socket for a SQLite database: beside its file (None: an in-memory database,
    or a path too long for a socket address — then the relay only polls)."""
    if connection.vendor != "sqlite":
        return None
    name = str(connection.settings_dict["NAME"])
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    address = str(Path(name).with_suffix(".relay.wake"))
    return address if len(os.fsencode(address)) <= _MAX_SOCKET_PATH else None


_sender: socket.socket | None = None


def poke(address: str, payload: bytes = b"") -> None:
    """One datagram to the relay's socket; whatever goes wrong is the poll's to make up."""
    global _sender
    try:
        if _sender is None:
            sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sender.setblocking(False)
            _sender = sender
        _sender.sendto(payload, address)
    except OSError:
        # ENOENT/ECONNREFUSED: no relay listens; EAGAIN: its queue is full, so it has
        # wake-ups to read already (a row's lost here shows as a gap: `Waker.gapless`).
        pass


def carries(connection) -> bool:
    """Whether a one-row write on `connection` wakes the relay with its row
    (`carried_payload`): on PostgreSQL, and on SQLite where the relay has a socket."""
    return connection.vendor == "postgresql" or local_address(connection) is not None


#: PostgreSQL: a NOTIFY's payload must be shorter than this many bytes (the server's limit);
#: SQLite's datagrams keep to it too.
PAYLOAD_MAX = 8000
_MAC_LENGTH = 64  # hex SHA-256


def carried_payload(row: tuple) -> str:
    """A wake-up's payload carrying `row` (as the relay's read returns it: id, routing key,
    body, correlation id, trace context): its JSON, signed with the project's SECRET_KEY; ""
    (a wake-up without a row) when too large for a payload.

    Signed because anyone who can connect to the database can NOTIFY on any channel: a
    payload is published only if one of this project's processes wrote it, never forged by a
    session that may not write the outbox (a read-only role would otherwise have the relay
    publish, and sign, events of its own, or mark a pending row published under another's
    body)."""
    text = orjson.dumps(list(row)).decode()
    payload = _mac(text) + text
    return payload if len(payload.encode()) < PAYLOAD_MAX else ""


def _mac(text: str) -> str:
    return salted_hmac(_SALT, text, algorithm="sha256").hexdigest()


# --- the relay's end ----------------------------------------------------------------------


class Waker:
    """The relay's end of the wake-ups: `fileno()` is readable when a commit woke the relay.

    This base class never wakes (a database without wake-ups: the relay only polls); `wait` and
    `interrupt` work for every kind."""

    #: The database gives ids in commit order and without gaps (SQLite: one writer at a time,
    #: AUTOINCREMENT rolled back with its transaction), and wake-ups can be lost (a datagram
    #: queue holds 10 by default): carried rows that skip an id skipped a wake-up, whose row
    #: a read finds.
    gapless: bool = False

    def __init__(self) -> None:
        self._interrupt_r, self._interrupt_w = socket.socketpair()
        self._interrupt_r.setblocking(False)
        self._interrupt_w.setblocking(False)
        self._carried: list[tuple] = []  # rows the wake-ups since the last take carried
        self._plain = False  # and whether one of them carried none

    def take_carried(self) -> list[tuple] | None:
        """The rows the wake-ups taken by `consume` since the last call carried (arrival
        order), or None if any of them carried none: only a read finds what that one announced."""
        carried, plain = self._carried, self._plain
        self._carried, self._plain = [], False
        return None if plain else carried

    def _took(self, payload: str | bytes | None) -> None:
        """A wake-up taken, with its payload (a row, or nothing)."""
        row = _carried_row(payload) if payload else None
        if row is None:
            self._plain = True
        else:
            self._carried.append(row)

    def listen(self) -> None:
        """Start receiving wake-ups, if not already (the relay holds its lock now). A failure
        is logged: the relay polls meanwhile."""

    def fileno(self) -> int | None:
        """Readable when woken; None while not listening."""
        return None

    def consume(self) -> bool:
        """Take the pending wake-ups: whether there was one. Stops listening if the channel
        broke (`fileno()` then says None, or another descriptor after `keepalive`)."""
        return False

    def keepalive(self) -> None:
        """Called every third of the relay lock's timeout: keep the channel's session alive,
        listen again if it was lost."""

    def close(self) -> None:
        """Stop listening (before the relay lock is released: the next holder listens)."""

    def wait(self, timeout: float) -> bool:
        """Block until woken, interrupted, or `timeout`; whether a commit woke it."""
        fd = self.fileno()
        watched = [self._interrupt_r] if fd is None else [self._interrupt_r, fd]
        try:
            ready, _, _ = select.select(watched, [], [], timeout)
        except (OSError, ValueError):
            return False
        if self._interrupt_r in ready:
            with contextlib.suppress(OSError):
                while self._interrupt_r.recv(64):
                    pass
        return fd is not None and fd in ready and self.consume()

    def interrupt(self) -> None:
        """End a `wait` now (from another thread or a signal handler: the relay stops)."""
        with contextlib.suppress(OSError):
            self._interrupt_w.send(b"\0")

    def dispose(self) -> None:
        """Close everything, for good."""
        self.close()
        self._interrupt_r.close()
        self._interrupt_w.close()


class LocalWaker(Waker):
    """SQLite: a UNIX datagram socket beside the database, which the writers poke."""

    gapless = True

    def __init__(self, address: str) -> None:
        super().__init__()
        self.address = address
        self._socket: socket.socket | None = None
        self._inode: int | None = None

    def listen(self) -> None:
        if self._socket is not None:
            return
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            # Left by a relay that died: only the relay holding the lock gets here.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address)
            receiver.bind(self.address)
            # Only the owner's processes may wake the relay (a wake-up costs it an outbox read).
            os.chmod(self.address, 0o600)
            receiver.setblocking(False)
            self._inode = os.stat(self.address).st_ino
        except OSError as exc:
            receiver.close()
            logger.warning("cannot listen for wake-ups at %s (%r); polling only", self.address, exc)
            return
        self._socket = receiver

    def fileno(self) -> int | None:
        return self._socket.fileno() if self._socket is not None else None

    def consume(self) -> bool:
        woken = False
        if self._socket is None:
            return woken
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while True:
                # Whole datagrams: one larger than the buffer would be cut, and then not a row.
                self._took(self._socket.recv(PAYLOAD_MAX) or None)
                woken = True
        return woken

    def close(self) -> None:
        if self._socket is None:
            return
        self._socket.close()
        self._socket = None
        # Unlinked only if it is still ours (the next relay binds a new one there).
        with contextlib.suppress(OSError):
            if os.stat(self.address).st_ino == self._inode:
                os.unlink(self.address)


class PgWaker(Waker):
    """PostgreSQL: `LISTEN` on a connection of its own."""

    def __init__(self, alias: str, idle_timeout: float) -> None:
        super().__init__()
        self.alias = alias
        self.idle_timeout = idle_timeout
        self._pg: psycopg.Connection | None = None
        self._broken = False  # closed by `keepalive`, after the transport stopped watching it

    def listen(self) -> None:
        if self._pg is not None and not self._pg.closed and not self._broken:
            return
        self.close()
        from django_tools.outbox.relays.lock import limit_idle

        params = connections[self.alias].get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        # A database that accepts the connection and never answers (paused) must not hold the
        # relay's loop for longer than this: it polls meanwhile.
        params.setdefault("connect_timeout", 5)
        try:
            self._pg = psycopg.connect(**params, autocommit=True)
            limit_idle(self._pg, self.idle_timeout)
            self._pg.execute(f"LISTEN {channel()}")
        except psycopg.Error as exc:
            logger.warning("cannot LISTEN for wake-ups (%r); polling only", exc)
            self.close()

    def fileno(self) -> int | None:
        if self._pg is None or self._pg.closed or self._broken:
            return None
        return self._pg.fileno()

    def consume(self) -> bool:
        if self.fileno() is None:
            return False
        woken = False
        try:
            for notify in self._pg.notifies(timeout=0):
                woken = True
                self._took(notify.payload)
        except psycopg.Error as exc:
            logger.warning("the wake-up connection broke (%r); polling until it is back", exc)
            self._broken = True
            self._took(None)
            return True  # read now: a wake-up may have been lost with it
        return woken

    def keepalive(self) -> None:
        if self.fileno() is not None:
            try:
                self._pg.execute("SELECT 1")
                return
            except psycopg.Error:
                self._broken = True
                return  # listens again next time, once the transport stopped watching it
        self.listen()

    def close(self) -> None:
        if self._pg is not None:
            with contextlib.suppress(psycopg.Error):
                self._pg.close()
            self._pg = None
        self._broken = False


def _carried_row(payload: str | bytes) -> tuple | None:
    """The outbox row a payload carries, as the relay's read returns it; None for anything
    else: a payload not signed by this project (`carried_payload`), or not a row."""
    if isinstance(payload, bytes):
        payload = payload.decode(errors="replace")
    mac, text = payload[:_MAC_LENGTH], payload[_MAC_LENGTH:]
    if not constant_time_compare(mac, _mac(text)):
        return None
    try:
        row = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if (
        not isinstance(row, list)
        or len(row) != 5
        or not isinstance(row[0], int)
        or not all(isinstance(value, str) for value in row[1:])
    ):
        return None
    return tuple(row)


def waker_for(idle_timeout: float | None = None) -> Waker:
    """The relay's end for the outbox's database; `idle_timeout`: the relay lock's
    (None: OUTBOX_LOCK_TIMEOUT)."""
    from django_tools.outbox.models import OutboxEvent

    if idle_timeout is None:
        idle_timeout = float(getattr(settings, "OUTBOX_LOCK_TIMEOUT", 15.0))
    connection = connections[router.db_for_write(OutboxEvent)]
    if connection.vendor == "postgresql":
        return PgWaker(connection.alias, idle_timeout)
    address = local_address(connection)
    return LocalWaker(address) if address is not None else Waker()
