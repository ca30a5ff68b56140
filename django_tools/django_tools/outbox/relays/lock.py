"""One publisher at a time: the lock the active relay holds, the standbys wait for."""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path

import psycopg
from django.db import connections

from django_tools.locks import advisory_key

LOCK_NAME = "django_tools.outbox.relay"


class RelayLock:
    """Held by the active relay. PostgreSQL: a session advisory lock on a connection of its
    own (released by the server if the relay dies). SQLite: an exclusive `flock` on a file
    beside the database (released by the kernel if the relay dies) — SQLite means one machine."""

    def __init__(self, alias: str = "default") -> None:
        self.alias = alias
        self.vendor = connections[alias].vendor
        self._pg: psycopg.Connection | None = None
        self._file = None

    def try_acquire(self) -> bool:
        if self.vendor == "postgresql":
            if self._pg is None or self._pg.closed:
                params = connections[self.alias].get_connection_params()
                params.pop("cursor_factory", None)
                params.pop("context", None)
                self._pg = psycopg.connect(**params, autocommit=True)
            row = self._pg.execute(
                "SELECT pg_try_advisory_lock(%s)", [advisory_key(LOCK_NAME)]
            ).fetchone()
            return bool(row[0])
        path = Path(connections[self.alias].settings_dict["NAME"]).with_suffix(".relay.lock")
        self._file = open(path, "a+")  # noqa: SIM115 - held for the lifetime of the lock
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            self._file = None
            return False
        return True

    def still_held(self) -> bool:
        if self.vendor != "postgresql":
            return self._file is not None
        try:
            self._pg.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def release(self) -> None:
        if self._pg is not None:
            with contextlib.suppress(psycopg.Error):
                # Unlocked now, not when the server notices the closed session: a standby
                # trying right after us gets it.
                self._pg.execute("SELECT pg_advisory_unlock(%s)", [advisory_key(LOCK_NAME)])
            with contextlib.suppress(psycopg.Error):
                self._pg.close()
            self._pg = None
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file, fcntl.LOCK_UN)
                self._file.close()
            self._file = None
