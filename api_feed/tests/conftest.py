import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pika
import pytest
from feed_testkit import FAST_POLICY, RunningConsumers, payload

from django_tools.connectivity import amqp_channel
from django_tools.replica.topology import Topology
from feed.models import ProdutoMirror

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def master_data(pk: int, revision: int = 0, **overrides: Any) -> dict[str, Any]:
    """`instance_data` as api_produtos (or any stock django-cqrs master of Produto) sends it."""
    data = {
        "id": pk,
        "sku": f"SKU-{pk}",
        "nome": f"Produto {pk}",
        "descricao": "",
        "preco": "10.00",
        "estoque": 1,
        "ativo": True,
        "criado_em": str(T0),
        "atualizado_em": str(T0 + timedelta(minutes=revision)),
        "cqrs_revision": revision,
        "cqrs_updated": str(T0 + timedelta(minutes=revision)),
    }
    data.update(overrides)
    return data


@pytest.fixture
def mirror():
    """Factory of replica rows, written directly (as the consumer would leave them)."""

    def make(pk: int, revision: int = 0, **overrides: Any) -> ProdutoMirror:
        data = master_data(pk, revision, **overrides)
        data["preco"] = Decimal(str(data["preco"]))
        data["criado_em"] = T0
        data["atualizado_em"] = overrides.get("atualizado_em", T0 + timedelta(minutes=pk))
        data["cqrs_updated"] = data["atualizado_em"]
        return ProdutoMirror.objects.create(**data)

    return make


@pytest.fixture
def instance_data():
    return master_data


# --- the reliable consumer against the real broker ---------------------------------------


@pytest.fixture
def topology(settings, rabbitmq_url, cqrs_exchange):
    """This test's own replica queue, retry queues and dead-letter queue, declared."""
    queue = f"test_feed_{uuid.uuid4().hex[:8]}"
    # A new dict, so that pytest-django's `settings` puts the old one back after the test.
    settings.CQRS = {
        **settings.CQRS,
        "queue": queue,
        "replica": {
            **settings.CQRS["replica"],
            "retry_base": FAST_POLICY.base,
            "retry_factor": FAST_POLICY.factor,
            "retry_cap": FAST_POLICY.cap,
            "CQRS_MAX_RETRIES": FAST_POLICY.max_retries,
            "retry_jitter": FAST_POLICY.jitter,
            "dead_letter_queue": None,
        },
    }
    topology = Topology.from_settings()
    with amqp_channel(rabbitmq_url) as channel:
        topology.declare(channel)
    yield topology
    with amqp_channel(rabbitmq_url) as channel:
        for name in [topology.queue, topology.dead_letter_queue]:
            channel.queue_delete(name)
        for tier in topology.policy.tiers():
            channel.queue_delete(topology.retry_queue(tier))


@pytest.fixture
def consumers(topology, rabbitmq_url):
    running = RunningConsumers(topology, rabbitmq_url)
    yield running
    running.stop_all()


@pytest.fixture
def publish(rabbitmq_url, cqrs_exchange):
    """Publish raw bodies to the session's exchange, as a master (or anything else) would."""
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    channel.confirm_delivery()

    def send(body, routing_key: str = "produto", headers: dict | None = None) -> None:
        if not isinstance(body, bytes):
            body = orjson.dumps(body)
        channel.basic_publish(
            cqrs_exchange,
            routing_key,
            body,
            pika.BasicProperties(delivery_mode=2, headers=headers),
            mandatory=True,
        )

    yield send
    connection.close()


@pytest.fixture
def event_payload():
    return payload


@pytest.fixture(autouse=True)
def isolated_cache(settings, monkeypatch):
    """A key prefix of each test's own in the real Redis (nothing is flushed), and the outage
    pause reset."""
    from feed import cache

    default = settings.CACHES["default"]
    settings.CACHES = {"default": {**default, "KEY_PREFIX": f"test-{uuid.uuid4().hex}"}}
    monkeypatch.setattr(cache, "_paused_until", 0.0)
