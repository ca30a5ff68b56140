from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from feed.models import ProdutoMirror

pytest_plugins = ["django_tools.testing"]

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
