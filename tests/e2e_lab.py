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

from django_tools.replica.policy import RetryPolicy, format_seconds

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


def replica_queues(queue: str, policy: RetryPolicy | None = None) -> list[str]:
    """A replica's queue, dead-letter queue and retry queues, to delete after a test."""
    tiers = (policy or RetryPolicy()).tiers()
    return [queue, f"dead_letter_{queue}", *(f"{queue}.retry.{format_seconds(t)}" for t in tiers)]


def delete_broker_objects(rabbitmq_url: str, exchange: str, queues: list[str]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    for queue in queues:
        channel.queue_delete(queue)
    channel.exchange_delete(exchange)
    connection.close()


# --- the feed consumer alone, as processes the tests may kill ------------------------------

FEED_DIR = REPO_ROOT / "api_feed"
PRODUTOS_DIR = REPO_ROOT / "api_produtos"


def stock_payload(signal_type: str, data: dict) -> dict:
    """`TransportPayload.to_dict()` as a stock django-cqrs master publishes it."""
    return {
        "signal_type": signal_type,
        "cqrs_id": "produto",
        "instance_data": data,
        "previous_data": None,
        "instance_pk": data["id"],
        "correlation_id": None,
        "retries": 0,
        "expires": None,
        "meta": None,
    }


def produto_data(pk: int, revision: int, **overrides) -> dict:
    data = {
        "id": pk,
        "sku": f"SKU-{pk}",
        "nome": f"Produto {pk} r{revision}",
        "descricao": "",
        "preco": f"{pk % 100}.{revision % 100:02d}",
        "estoque": revision,
        "ativo": True,
        "criado_em": "2026-01-01 00:00:00+00:00",
        "atualizado_em": f"2026-01-01 00:{revision % 60:02d}:00+00:00",
        "cqrs_revision": revision,
        "cqrs_updated": f"2026-01-01 00:{revision % 60:02d}:00+00:00",
    }
    data.update(overrides)
    return data


class Publisher:
    """Publishes to the exchange with confirms, as a master would."""

    def __init__(self, rabbitmq_url: str, exchange: str) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
        self.channel = self.connection.channel()
        self.channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        self.channel.confirm_delivery()
        self.exchange = exchange

    def publish(self, payload: dict, routing_key: str = "produto") -> None:
        import orjson

        self.channel.basic_publish(
            self.exchange,
            routing_key,
            orjson.dumps(payload),
            pika.BasicProperties(delivery_mode=2, content_type="text/plain"),
            mandatory=True,
        )

    def depth(self, queue: str) -> int:
        return self.channel.queue_declare(queue, passive=True).method.message_count

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


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

    def rows(self) -> dict[int, tuple]:
        """The feed's replica rows: id → (revision, nome, estoque)."""
        conn = self._connect()
        try:
            cursor = conn.execute("SELECT id, cqrs_revision, nome, estoque FROM feed_produtomirror")
            return {row[0]: tuple(row[1:]) for row in cursor.fetchall()}
        finally:
            conn.close()

    @contextlib.contextmanager
    def locked(self):
        """Hold the replica table so that every write to it fails for a while."""
        conn = self._connect()
        try:
            if self.is_postgres:
                conn.execute("BEGIN")
                conn.execute("LOCK TABLE feed_produtomirror IN ACCESS EXCLUSIVE MODE")
            else:
                conn.execute("BEGIN EXCLUSIVE")
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()


class ManageProcess:
    """`manage.py <args>` of a service, in a process group of its own (so that a SIGKILL
    takes its workers too)."""

    def __init__(self, directory: Path, args: list[str], env: dict[str, str], log: Path) -> None:
        self.directory = directory
        self.args = args
        self.env = env
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> ManageProcess:
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", *self.args],
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


def feed_consumer(env: dict[str, str], log: Path, workers: int = 1) -> ManageProcess:
    return ManageProcess(FEED_DIR, ["cqrs_consume", "-w", str(workers)], env, log).start()


def outbox_relay(env: dict[str, str], log: Path, *args: str) -> ManageProcess:
    return ManageProcess(PRODUTOS_DIR, ["outbox_relay", *args], env, log).start()


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


def feed_environment(tmp: Path, rabbitmq_url: str, databases: Databases, **extra: str):
    return service_environment("feed", tmp, rabbitmq_url, databases, **extra)


def delete_feed_queues(rabbitmq_url: str, env: dict[str, str], policy: RetryPolicy) -> None:
    delete_broker_objects(
        rabbitmq_url, env["CQRS_EXCHANGE"], replica_queues(env["CQRS_QUEUE"], policy)
    )


FeedDatabase = ServiceDatabase


def run_manage(directory: Path, env: dict[str, str], *args: str, timeout: float = 300) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=directory, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def create_products(env: dict[str, str], count: int, updates: int = 0) -> None:
    """`count` products through the master's ORM (so each change has its outbox row), then
    `updates` rounds of one update per product, interleaving the products' events."""
    script = f"""
from decimal import Decimal
from produto.models import Produto
for start in range(0, {count}, 500):
    Produto.cqrs.bulk_create([
        Produto(sku=f"BULK-{{n}}", nome=f"Produto {{n}}", preco=Decimal(n % 100))
        for n in range(start, min(start + 500, {count}))
    ])
ids = list(Produto.objects.order_by("id").values_list("id", flat=True))
for round_ in range({updates}):
    for produto in Produto.objects.filter(id__in=ids).order_by("id").iterator():
        produto.estoque = round_ + 1
        produto.save()
"""
    run_manage(PRODUTOS_DIR, env, "shell", "-c", script)
