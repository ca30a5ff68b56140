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
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from django.db.backends.sqlite3 import base

_guard = threading.Lock()
_gates: dict[str, _Gate] = {}


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
        try:
            return super()._commit()
        finally:
            self._release()

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
