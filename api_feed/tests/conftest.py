"""Fixtures of api_feed's tests. The replica's consumer against the real broker (`topology`,
`consumers`, `publish`, `event_payload`) comes from django_tools.testing."""

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

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


@pytest.fixture(autouse=True)
def isolated_cache(settings, monkeypatch):
    """A key prefix of each test's own in the real Redis (nothing is flushed), and the outage
    pause reset."""
    from feed import cache

    default = settings.CACHES["default"]
    settings.CACHES = {"default": {**default, "KEY_PREFIX": f"test-{uuid.uuid4().hex}"}}
    monkeypatch.setattr(cache, "_paused_until", 0.0)
