"""The lab under test: the real `apis up` (servers, consumer) on free ports, with databases,
exchange and queue of its own.

The root test process never imports Django settings: each service runs in its own subprocess.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pika
import pytest

from apis_lab import databases, lab_run
from apis_lab.broker_objects import delete_broker_objects, replica_queues
from apis_lab.catalogue import FEED, PRODUTOS
from apis_lab.databases import Databases
from apis_lab.lab_run import (
    APIS,
    Lab,
    LabError,
    run_manage,
    service_environment,
)
from apis_lab.net import free_port  # noqa: F401 - re-exported for the tests
from apis_lab.supervision import ManageProcess
from django_tools.replica.policy import RetryPolicy
from django_tools.testing import wait_until  # noqa: F401 - re-exported for the tests

REPO_ROOT = Path(__file__).resolve().parents[1]
PRODUTOS_DIR, FEED_DIR = PRODUTOS.directory, FEED.directory
API_KEY = "e2e-key"


class ServiceDatabase(databases.ServiceDatabase):
    """Plain SQL on a service's database, plus what these tests know of the feed's tables."""

    def rows(self) -> dict[int, tuple]:
        """The feed's replica rows: id → (revision, nome, estoque)."""
        return {
            row[0]: tuple(row[1:])
            for row in self.fetchall(
                "SELECT id, cqrs_revision, nome, estoque FROM feed_produtomirror"
            )
        }

    def locked(self, table: str = "feed_produtomirror"):
        """The replica's table held, so that every write to it waits or fails for a while."""
        return super().locked(table)


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


def create_products(env: dict[str, str], count: int, updates: int = 0, start: int = 0) -> None:
    """`count` products through the master's ORM (so each change has its outbox row), then
    `updates` rounds of one update per product, interleaving the products' events. SKUs are
    numbered from `start`."""
    script = f"""
from decimal import Decimal
from produto.models import Produto
for first in range({start}, {start + count}, 500):
    Produto.cqrs.bulk_create([
        Produto(sku=f"BULK-{{n}}", nome=f"Produto {{n}}", preco=Decimal(n % 100))
        for n in range(first, min(first + 500, {start + count}))
    ])
ids = list(Produto.objects.order_by("id").values_list("id", flat=True))
for round_ in range({updates}):
    for produto in Produto.objects.filter(id__in=ids).order_by("id").iterator():
        produto.estoque = round_ + 1
        produto.save()
"""
    run_manage(PRODUTOS_DIR, env, "shell", "-c", script)


def start_lab(
    tmp: Path, rabbitmq_url: str, databases: Databases, *extra_args: str, **extra_env: str
) -> Lab:
    try:
        return lab_run.start_lab(
            tmp, rabbitmq_url, databases, *extra_args, api_key=API_KEY, extra_env=extra_env
        )
    except LabError as exc:
        pytest.fail(str(exc))


def run_apis(*args: str, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """`apis <args>`, output captured. Past `timeout` it gets SIGTERM (through which the fault
    suite stops every broker node and process it started), then SIGKILL if it does not go."""
    process = subprocess.Popen(
        [APIS, *args], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        try:
            out, err = process.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        pytest.fail(f"`apis {' '.join(args)}` ran over {timeout:.0f}s; it said:\n{err[-5000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)
