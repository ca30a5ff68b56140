"""Running the services outside `apis up`: throwaway databases, `manage.py` processes that can
be killed, direct SQL, broker clean-up. Used by `apis bench` and the end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pika
import psycopg

from apis.workspace import FEED, PRODUTOS, REPO_ROOT
from django_tools.replica.policy import RetryPolicy, format_seconds

PRODUTOS_DIR = PRODUTOS.directory
#: The `apis` command of the running environment (the venv's script beside its python).
APIS = str(Path(sys.executable).with_name("apis"))
FEED_DIR = FEED.directory


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


def replica_queues(queue: str, policy: RetryPolicy | None = None) -> list[str]:
    """A replica's queue, dead-letter queue and retry queues (to delete them afterwards)."""
    tiers = (policy or RetryPolicy()).tiers()
    return [queue, f"dead_letter_{queue}", *(f"{queue}.retry.{format_seconds(t)}" for t in tiers)]


def delete_broker_objects(rabbitmq_url: str, exchange: str, queues: list[str]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    for queue in queues:
        channel.queue_delete(queue)
    channel.exchange_delete(exchange)
    connection.close()


class ServiceDatabase:
    """Direct SQL on a service's database (SQLite file or PostgreSQL), outside Django."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_postgres = url.startswith(("postgres://", "postgresql://"))

    def _connect(self):
        if self.is_postgres:
            return psycopg.connect(self.url, autocommit=True)
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

    def rows(self) -> dict[int, tuple]:
        """The feed's replica rows: id → (revision, nome, estoque)."""
        conn = self._connect()
        try:
            cursor = conn.execute("SELECT id, cqrs_revision, nome, estoque FROM feed_produtomirror")
            return {row[0]: tuple(row[1:]) for row in cursor.fetchall()}
        finally:
            conn.close()

    @contextlib.contextmanager
    def locked(self, table: str = "feed_produtomirror"):
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


class ManageProcess:
    """`manage.py <args>` of a service, in a process group of its own (so that a SIGKILL
    takes its workers too)."""

    def __init__(
        self,
        directory: Path,
        args: list[str],
        env: dict[str, str],
        log: Path,
        command: list[str] | None = None,
    ) -> None:
        self.directory = directory
        self.argv = command or [sys.executable, "manage.py", *args]
        self.env = env
        self.log = log
        self.process: subprocess.Popen | None = None

    @classmethod
    def module(
        cls, directory: Path, settings: str, module: str, args: list[str], env: dict, log: Path
    ) -> ManageProcess:
        """`python -m module args` under a service's Django settings, instead of manage.py."""
        env = {**env, "DJANGO_SETTINGS_MODULE": settings}
        return cls(directory, [], env, log, command=[sys.executable, "-m", module, *args])

    def start(self) -> ManageProcess:
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.directory,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def kill9(self) -> None:
        """SIGKILL to the whole group at once: nothing gets to clean up."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill9()
        if self.process:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)


def service_environment(
    service: str, tmp: Path, rabbitmq_url: str, databases: Databases, **extra: str
) -> tuple[dict[str, str], str]:
    """A migrated database of its own for `service` ("produtos" or "feed"), and the environment
    to run it with (its own exchange and, for the feed, queue declared); returns (env, db url)."""
    directory = PRODUTOS_DIR if service == "produtos" else FEED_DIR
    db_url = databases.url_for(service)
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    empty_env_file = tmp / f".env.{service}.empty"
    empty_env_file.write_text("")
    env.update(
        {f"{service.upper()}_ENV_FILE": str(empty_env_file)},
        DATABASE_URL=db_url,
        RABBITMQ_URL=rabbitmq_url,
        CQRS_EXCHANGE=f"e2e_cqrs_{uuid.uuid4().hex[:8]}",
        CQRS_QUEUE=f"e2e_feed_{uuid.uuid4().hex[:8]}",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    commands = [["migrate", "--noinput"]] + ([["cqrs_declare"]] if service == "feed" else [])
    for command in commands:
        subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=directory, env=env, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    return env, db_url


def run_manage(directory: Path, env: dict[str, str], *args: str, timeout: float = 300) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=directory, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Lab:
    """A running `apis up`; its output is collected line by line."""

    produtos_url: str
    feed_url: str
    exchange: str
    queue: str
    env: dict[str, str]
    process: subprocess.Popen
    database_urls: dict[str, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        return "\n".join(self.lines)

    def broker_queues(self) -> list[str]:
        """Every queue this lab declared (to delete them afterwards)."""
        celery = [f"{self.queue}.{service}.tasks" for service in ("produtos", "feed")]
        return [*replica_queues(self.queue), *celery]

    def child_pids(self) -> list[int]:
        return [int(pid) for pid in re.findall(r"started \(pid=(\d+)\)", self.output())]

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        for pid in self.child_pids():  # honcho gives each child a session of its own
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        return self.process.returncode


class LabError(Exception):
    """`apis up` did not become ready."""


def start_lab(
    tmp: Path,
    rabbitmq_url: str,
    databases: Databases,
    *extra_args: str,
    api_key: str,
    ready_timeout: float = 90,
    prefix: str = "e2e",
    extra_env: dict[str, str] | None = None,
) -> Lab:
    """The real `apis up` on free loopback ports, with its own databases, exchange and queue;
    returns once both APIs answer /health."""
    produtos_port, feed_port = free_port(), free_port()
    exchange = f"{prefix}_cqrs_{uuid.uuid4().hex[:8]}"
    queue = f"{prefix}_feed_{uuid.uuid4().hex[:8]}"
    env_files, database_urls = {}, {}
    for service, extra in (("produtos", f"PRODUTOS_API_KEY={api_key}\n"), ("feed", "")):
        database_urls[service] = databases.url_for(service)
        path = tmp / f".env.{service}"
        path.write_text(f"DATABASE_URL={database_urls[service]}\n{extra}")
        env_files[f"{service.upper()}_ENV_FILE"] = str(path)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PRODUTOS_API_KEY")}
    env.update(env_files)
    env.update(
        RABBITMQ_URL=rabbitmq_url,
        CQRS_EXCHANGE=exchange,
        CQRS_QUEUE=queue,
        CELERY_QUEUE_PREFIX=f"{queue}.",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env or {})
    process = subprocess.Popen(
        [APIS, "up", "--host", "127.0.0.1",
         "--produtos-port", str(produtos_port), "--feed-port", str(feed_port), *extra_args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    lab = Lab(
        produtos_url=f"http://127.0.0.1:{produtos_port}",
        feed_url=f"http://127.0.0.1:{feed_port}",
        exchange=exchange,
        queue=queue,
        env=env,
        process=process,
        database_urls=database_urls,
    )
    threading.Thread(target=_collect, args=(process, lab.lines), daemon=True).start()
    deadline = time.monotonic() + ready_timeout
    while "apis up: ready" not in lab.output():
        if process.poll() is not None or time.monotonic() > deadline:
            lab.stop()
            raise LabError(f"`apis up` did not become ready; its output:\n{lab.output()[-5000:]}")
        time.sleep(0.1)
    return lab


def _collect(process: subprocess.Popen, lines: list[str]) -> None:
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
