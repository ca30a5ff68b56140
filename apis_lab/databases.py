"""Throwaway databases for the lab's runs (SQLite files, or databases on a PostgreSQL server),
a PostgreSQL server of the lab's own (the fault suite pauses and restarts it), and plain SQL on
them, outside Django."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from apis_lab.net import free_port
from apis_lab.supervision import children_of

#: Seconds a connection of the lab's own SQL waits for a server (a paused one never answers).
CONNECT_TIMEOUT = 10


class Databases:
    """One fresh database per service: SQLite files in a temporary folder, or — when the server
    URL (default: DATABASE_URL) is PostgreSQL — new databases on that server, dropped after."""

    def __init__(self, tmp: Path, server_url: str | None = None, prefix: str = "e2e") -> None:
        self.tmp = tmp
        self.server_url = os.environ.get("DATABASE_URL", "") if server_url is None else server_url
        self.prefix = prefix
        self.created: list[str] = []

    @property
    def is_postgres(self) -> bool:
        return self.server_url.startswith(("postgres://", "postgresql://"))

    def url_for(self, service: str) -> str:
        if not self.is_postgres:
            return (
                f"sqlite:///{self.tmp / f'{self.prefix}_{service}_{uuid.uuid4().hex[:6]}.sqlite3'}"
            )
        name = f"{self.prefix}_{service}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return urlunsplit(urlsplit(self.server_url)._replace(path=f"/{name}"))

    def drop_all(self) -> None:
        if not self.created:
            return
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            for name in self.created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class ServiceDatabase:
    """Direct SQL on a service's database (SQLite file or PostgreSQL), outside Django."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_postgres = url.startswith(("postgres://", "postgresql://"))

    def _connect(self):
        if self.is_postgres:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        import sqlite3

        return sqlite3.connect(urlsplit(self.url).path, timeout=10, isolation_level=None)

    def scalar(self, query: str):
        conn = self._connect()
        try:
            return conn.execute(query).fetchone()[0]
        finally:
            conn.close()

    def fetchall(self, query: str) -> list[tuple]:
        conn = self._connect()
        try:
            return [tuple(row) for row in conn.execute(query).fetchall()]
        finally:
            conn.close()

    def execute(self, statements: list[str]) -> None:
        conn = self._connect()
        try:
            for statement in statements:
                conn.execute(statement)
        finally:
            conn.close()

    @contextlib.contextmanager
    def locked(self, table: str):
        """Hold `table` so that every write to it waits or fails for a while."""
        conn = self._connect()
        try:
            if self.is_postgres:
                conn.execute("BEGIN")
                conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            else:
                conn.execute("BEGIN EXCLUSIVE")
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()


class DatabaseUnavailable(Exception):
    """No PostgreSQL server binaries, or the lab's server would not start; the message says
    why."""


def postgres_bindir() -> Path:
    """The newest installed server's binaries (Debian: /usr/lib/postgresql/<version>/bin), else
    `pg_ctl`'s folder on PATH."""
    versions = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "pg_ctl").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1]
    found = shutil.which("pg_ctl")
    if found is None:
        raise DatabaseUnavailable(
            "PostgreSQL server binaries (initdb, pg_ctl) are not installed: a PostgreSQL run "
            "of the fault suite starts a server of its own (apt-get install postgresql)"
        )
    return Path(found).parent


@dataclass
class PostgresServer:
    """A PostgreSQL server of the lab's own on 127.0.0.1: its own data folder under `base`, its
    own port and socket folder, trust authentication for `postgres`. The machine's server (which
    other tests use) is never touched: the fault suite pauses and restarts this one.

    `initdb` refuses to run as root, so as root the server runs as the `postgres` user (the
    folder is handed to it)."""

    base: Path
    port: int = field(default_factory=free_port)
    bindir: Path = field(default_factory=postgres_bindir)

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log_file(self) -> Path:
        return self.base / "server.log"

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str, timeout: float = 120, check: bool = True):
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.base
        )
        if check and result.returncode != 0:
            raise DatabaseUnavailable(
                f"{argv[0]} of the lab's PostgreSQL server failed: "
                f"{(result.stdout + result.stderr).strip()[-500:]} (log: {self.log_file})"
            )
        return result

    def start(self) -> PostgresServer:
        self.base.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
            # The server (as postgres) must reach its folder through the run's folders.
            # (mkdtemp makes them 0700): only folders the others cannot cross, up to the first
            # they can.
            for parent in self.base.parents:
                mode = parent.stat().st_mode
                if mode & 0o001:
                    break
                parent.chmod(mode | 0o011)
        if not (self.data / "PG_VERSION").exists():
            self._run(
                "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                "--no-sync", "--no-instructions",
            )  # fmt: skip
        self.start_server()
        return self

    def start_server(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.base} "
            # A lab's throwaway data: durability against an OS crash is not what is tested (a
            # restart, even an immediate one, recovers from the WAL in the page cache). Commits
            # stay synchronous: a commit answered is in that WAL, as in production.
            "-c fsync=off -c full_page_writes=off "
            "-c max_connections=300"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log_file), "-o", options, "-w",
            "-t", "60", "start",
        )  # fmt: skip

    def stop_server(self, mode: str = "fast") -> None:
        """`pg_ctl stop -m fast` (clients disconnected, a clean shutdown) or `immediate` (as if
        it crashed: recovery at the next start)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop",
                  check=False)  # fmt: skip

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def pause(self) -> list[int]:
        """SIGSTOP the postmaster (so it forks nothing more), then every process of the server;
        returns their pids."""
        pid = self.postmaster_pid()
        if pid is None:
            return []
        os.kill(pid, signal.SIGSTOP)
        stopped = [pid]
        for child in children_of(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGSTOP)
                stopped.append(child)
        return stopped

    @staticmethod
    def resume(pids: list[int]) -> None:
        for pid in reversed(pids):  # the backends first, the postmaster last
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def wait_ready(self, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.url, connect_timeout=3):
                    return True
            except psycopg.Error:
                time.sleep(0.2)
        return False

    def stop(self) -> None:
        """Stop the server at once and delete its folder."""
        pid = self.postmaster_pid()
        if pid is not None:
            self.resume([pid, *children_of(pid)])  # a paused server cannot stop
        with contextlib.suppress(subprocess.TimeoutExpired, DatabaseUnavailable):
            self.stop_server("immediate")
        shutil.rmtree(self.base, ignore_errors=True)
