"""SQLite with writers that queue promptly: Django's SQLite backend, plus a write gate.

Several processes write one SQLite file (the API's server workers, the relay; the consumer on
the replica's). A writer that finds the write lock taken is put to sleep by SQLite's busy handler
for 1, 2, 5, 10, 15, 20, 25… ms, however soon the lock is free again: under a burst of writes
most of the time went to these sleeps (measured: BEGIN IMMEDIATE was 29% of a server worker's
samples, waiting). Here every write transaction first takes an exclusive `flock` on a file beside
the database (and a lock between the threads of the process): a waiting writer is woken by the
kernel the moment the previous one commits, and then finds SQLite's own lock free.

Readers never take the gate (WAL lets them read during a write). A process that dies holding the
gate releases it with its file descriptor. `ENGINE = "django_tools.db.sqlite"`; the shared
settings (`database_settings`) use it for every SQLite database.

Checkpoints off the write path: SQLite copies the WAL back into the database (a checkpoint) in
the commit that takes the WAL past `wal_autocheckpoint` pages (1000), so one transaction in
~80 of the replica's one-row batches took ~5 ms instead of ~1 ms: at low load that was the
whole p99 of the replication lag (measured: every ~0.43 s at 200 writes/s). Here a daemon
thread per database file and process runs a PASSIVE checkpoint (it waits for no reader or
writer, and SQLite releases the GIL while it copies) `CHECKPOINT_EVERY` seconds after this
process committed a write; the commits' own checkpoint stays as the safety net, at
`FALLBACK_AUTOCHECKPOINT` pages (a process without the thread, a write outside a transaction).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from django.db.backends.sqlite3 import base

_guard = threading.Lock()
_gates: dict[str, _Gate] = {}
_checkpointers: dict[tuple[int, str], _Checkpointer] = {}

logger = logging.getLogger("django_tools.db")

#: Seconds after a committed write before the background checkpoint (the WAL holds a few hundred
#: pages by then at the replica's low-load rate, copied while the writers go on).
CHECKPOINT_EVERY = 0.2
#: `wal_autocheckpoint` of this engine's connections: the commit that takes the WAL past this
#: many pages checkpoints itself, as SQLite always does, if the background one fell behind.
FALLBACK_AUTOCHECKPOINT = 10000


class _Gate:
    """One per database file and process: a thread lock, then the file lock."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.threads = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    def _file(self) -> int:
        # Opened in this process: a descriptor inherited across fork() shares its flock with
        # the parent, which would let both in at once.
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            self._pid = os.getpid()
        return self._fd

    def acquire(self) -> None:
        self.threads.acquire()
        try:
            fcntl.flock(self._file(), fcntl.LOCK_EX)
        except BaseException:
            self.threads.release()
            raise

    def release(self) -> None:
        try:
            fcntl.flock(self._file(), fcntl.LOCK_UN)
        finally:
            self.threads.release()


class _Checkpointer:
    """One per database file and process: a daemon thread that checkpoints the WAL (PASSIVE)
    `CHECKPOINT_EVERY` seconds after a write committed (`written`), on a connection of its own."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.checkpoints = 0  # how many ran, and how many failed (tests read them)
        self.failures = 0
        self._dirty = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"sqlite-checkpoint {Path(path).name}", daemon=True
        )
        self._thread.start()

    def written(self) -> None:
        self._dirty.set()

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        while True:
            self._dirty.wait()
            # Let the writes of the next moments join this checkpoint instead of starting one
            # each; a process that stops writing gets its last checkpoint all the same.
            time.sleep(CHECKPOINT_EVERY)
            self._dirty.clear()
            try:
                if connection is None:
                    # Read-write, never create: a database deleted meanwhile stays deleted.
                    uri = f"{Path(self.path).resolve().as_uri()}?mode=rw"
                    connection = sqlite3.connect(uri, uri=True, timeout=5)
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.checkpoints += 1
            except sqlite3.Error as exc:  # the next write tries again; commits remain the net
                self.failures += 1
                logger.debug("background checkpoint of %s failed: %r", self.path, exc)
                with contextlib.suppress(sqlite3.Error):
                    if connection is not None:
                        connection.close()
                connection = None


def _checkpointer_for(database: str) -> _Checkpointer | None:
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    key = (os.getpid(), database)  # threads do not survive a fork: one per process
    with _guard:
        checkpointer = _checkpointers.get(key)
        if checkpointer is None:
            checkpointer = _checkpointers[key] = _Checkpointer(database)
        return checkpointer


def _gate_for(database: str) -> _Gate | None:
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = str(Path(database).with_suffix(".write.lock"))
    with _guard:
        gate = _gates.get(path)
        if gate is None:
            gate = _gates[path] = _Gate(path)
        return gate


class DatabaseWrapper(base.DatabaseWrapper):
    _held: _Gate | None = None

    def get_new_connection(self, conn_params):
        connection = super().get_new_connection(conn_params)
        if _checkpointer_for(str(self.settings_dict["NAME"])) is not None:
            connection.execute(f"PRAGMA wal_autocheckpoint={FALLBACK_AUTOCHECKPOINT}")
        return connection

    def _start_transaction_under_autocommit(self):
        gate = _gate_for(str(self.settings_dict["NAME"]))
        if gate is not None:
            gate.acquire()
            self._held = gate
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        gate, self._held = self._held, None
        if gate is not None:
            gate.release()

    def _commit(self):
        wrote = self._held is not None  # a write transaction (it took the gate)
        try:
            return super()._commit()
        finally:
            self._release()
            if wrote:
                checkpointer = _checkpointer_for(str(self.settings_dict["NAME"]))
                if checkpointer is not None:
                    checkpointer.written()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._release()

    def _close(self):
        try:
            return super()._close()
        finally:
            self._release()
