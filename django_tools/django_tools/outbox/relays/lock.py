"""One publisher at a time: the lock the active relay holds, the standbys wait for."""

from __future__ import annotations

import contextlib
import fcntl
import logging
from pathlib import Path

import psycopg
from django.conf import settings
from django.db import connections

from django_tools.locks import advisory_key

logger = logging.getLogger("django_tools.outbox")

LOCK_NAME = "django_tools.outbox.relay"
#: `idle_session_timeout` exists from PostgreSQL 14 on.
IDLE_SESSION_TIMEOUT_SINCE = 140000


def limit_idle(connection: psycopg.Connection, idle_timeout: float) -> None:
    """Have the server end this session after `idle_timeout` seconds without a command
    (`idle_session_timeout`): the session of a paused relay does not outlive the pause."""
    if idle_timeout <= 0:
        return
    if connection.info.server_version < IDLE_SESSION_TIMEOUT_SINCE:
        logger.warning(
            "PostgreSQL %s has no idle_session_timeout: a paused relay keeps the relay lock "
            "until it resumes or dies",
            connection.info.server_version,
        )
        return
    connection.execute(
        "SELECT set_config('idle_session_timeout', %s, false)", [f"{int(idle_timeout * 1000)}ms"]
    )


class RelayLock:
    """Held by the active relay. PostgreSQL: a session advisory lock on a connection of its
    own (released by the server if the relay dies). SQLite: an exclusive `flock` on a file
    beside the database (released by the kernel if the relay dies) — SQLite means one machine.

    A relay that is alive but makes no progress — paused (SIGSTOP), its VM frozen — would hold
    a session lock for ever. On PostgreSQL 14+ the lock's session gets `idle_session_timeout`
    = `idle_timeout` (OUTBOX_LOCK_TIMEOUT): the active relay asks `still_held()` every
    `check_every` seconds (a third of it), which keeps its session busy; a frozen one asks
    nothing, the server ends its session and a standby takes the lock. When the frozen relay
    resumes, its next `still_held()` fails and it stands by. (Older PostgreSQL: the lock stays
    until the frozen relay resumes or is killed; `outbox_relay_health` reports it stale.)"""

    def __init__(self, alias: str = "default", idle_timeout: float | None = None) -> None:
        self.alias = alias
        self.vendor = connections[alias].vendor
        if idle_timeout is None:
            idle_timeout = float(getattr(settings, "OUTBOX_LOCK_TIMEOUT", 15.0))
        self.idle_timeout = idle_timeout
        self.check_every = idle_timeout / 3 if idle_timeout > 0 else 5.0
        self._pg: psycopg.Connection | None = None
        self._file = None

    def try_acquire(self) -> bool:
        if self.vendor == "postgresql":
            if self._pg is None or self._pg.closed:
                params = connections[self.alias].get_connection_params()
                params.pop("cursor_factory", None)
                params.pop("context", None)
                self._pg = psycopg.connect(**params, autocommit=True)
                limit_idle(self._pg, self.idle_timeout)
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
        if self._pg is None or self._pg.closed:
            return False
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
