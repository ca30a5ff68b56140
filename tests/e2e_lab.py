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

import pika
import pytest

from apis.runtime import (  # noqa: F401 - re-exported for the tests
    FEED_DIR,
    PRODUTOS_DIR,
    Databases,
    ManageProcess,
    ServiceDatabase,
    delete_broker_objects,
    replica_queues,
    run_manage,
    service_environment,
)
from django_tools.replica.policy import RetryPolicy

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


# --- the feed consumer alone, as processes the tests may kill ------------------------------


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


def feed_consumer(env: dict[str, str], log: Path, workers: int = 1) -> ManageProcess:
    return ManageProcess(FEED_DIR, ["cqrs_consume", "-w", str(workers)], env, log).start()


def outbox_relay(env: dict[str, str], log: Path, *args: str) -> ManageProcess:
    return ManageProcess(PRODUTOS_DIR, ["outbox_relay", *args], env, log).start()


def feed_environment(tmp: Path, rabbitmq_url: str, databases: Databases, **extra: str):
    return service_environment("feed", tmp, rabbitmq_url, databases, **extra)


def delete_feed_queues(rabbitmq_url: str, env: dict[str, str], policy: RetryPolicy) -> None:
    delete_broker_objects(
        rabbitmq_url, env["CQRS_EXCHANGE"], replica_queues(env["CQRS_QUEUE"], policy)
    )


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
