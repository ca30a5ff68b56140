"""Response bodies and query parameters of the feed."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from ninja import Field, Schema

from django_tools.ninja import Money, text

Ordering = Literal["nome", "-nome", "preco", "-preco", "atualizado_em", "-atualizado_em"]
PriceBound = Annotated[Decimal, Field(max_digits=14, decimal_places=2)]


class FeedItemOut(Schema):
    id: int
    sku: str
    nome: str
    descricao: str
    preco: Money
    estoque: int
    ativo: bool
    criado_em: datetime
    atualizado_em: datetime
    revisao: int = Field(validation_alias="cqrs_revision")


class FeedFilters(Schema):
    ativo: bool | None = None
    q: text(max_length=200) | None = None
    preco_min: PriceBound | None = None
    preco_max: PriceBound | None = None
    ordering: Ordering = "-atualizado_em"
