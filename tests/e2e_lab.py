"""The lab under test: the real `apis up` (servers, consumer) on free ports, with databases,
exchange and queue of its own.

The root test process never imports Django settings: each service runs in its own subprocess.
"""

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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pika
import psycopg
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
API_KEY = "e2e-key"
START_HINT = (
    "start the infrastructure with `docker compose up -d` and make sure the RabbitMQ user "
    "exists (`rabbitmqctl add_user admin admin`, see README), or point RABBITMQ_URL/REDIS_URL "
    "at yours"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    condition: Callable[[], object], timeout: float, interval: float = 0.02, what: str = ""
):
    """Poll until `condition()` is truthy; returns its value, fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


class Databases:
    """One fresh database per service: SQLite files in a temporary folder, or — when
    DATABASE_URL points at PostgreSQL — new databases on that server, dropped afterwards."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.server_url = os.environ.get("DATABASE_URL", "")
        self.created: list[str] = []

    @property
    def is_postgres(self) -> bool:
        return self.server_url.startswith(("postgres://", "postgresql://"))

    def url_for(self, service: str) -> str:
        if not self.is_postgres:
            return f"sqlite:///{self.tmp / f'{service}.sqlite3'}"
        name = f"e2e_{service}_{uuid.uuid4().hex[:8]}"
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


@dataclass
class Lab:
    """A running `apis up`; its output is collected line by line."""

    produtos_url: str
    feed_url: str
    exchange: str
    queue: str
    env: dict[str, str]
    process: subprocess.Popen
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        return "\n".join(self.lines)

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


def start_lab(
    tmp: Path, rabbitmq_url: str, databases: Databases, *extra_args: str, ready_timeout: float = 90
) -> Lab:
    produtos_port, feed_port = free_port(), free_port()
    exchange = f"e2e_cqrs_{uuid.uuid4().hex[:8]}"
    queue = f"e2e_feed_{uuid.uuid4().hex[:8]}"
    env_files = {}
    for service, extra in (("produtos", f"PRODUTOS_API_KEY={API_KEY}\n"), ("feed", "")):
        path = tmp / f".env.{service}"
        path.write_text(f"DATABASE_URL={databases.url_for(service)}\n{extra}")
        env_files[f"{service.upper()}_ENV_FILE"] = str(path)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PRODUTOS_API_KEY")}
    env.update(env_files)
    env.update(
        RABBITMQ_URL=rabbitmq_url,
        CQRS_EXCHANGE=exchange,
        CQRS_QUEUE=queue,
        PYTHONUNBUFFERED="1",
    )
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("apis")), "up", "--host", "127.0.0.1",
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
    )
    threading.Thread(target=_collect, args=(process, lab.lines), daemon=True).start()
    deadline = time.monotonic() + ready_timeout
    while "apis up: ready" not in lab.output():
        if process.poll() is not None or time.monotonic() > deadline:
            lab.stop()
            pytest.fail(f"`apis up` did not become ready; its output:\n{lab.output()[-5000:]}")
        time.sleep(0.1)
    return lab


def _collect(process: subprocess.Popen, lines: list[str]) -> None:
    for line in process.stdout:
        lines.append(line.rstrip("\n"))


def delete_broker_objects(rabbitmq_url: str, exchange: str, queues: list[str]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    for queue in queues:
        channel.queue_delete(queue)
    channel.exchange_delete(exchange)
    connection.close()
