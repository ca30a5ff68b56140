"""Response bodies and query parameters of the feed."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from ninja import Field, Schema
from pydantic import AliasChoices

from django_tools.chassis.ninja import DecimalParam, Money, text

Ordering = Literal["nome", "-nome", "preco", "-preco", "atualizado_em", "-atualizado_em"]


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
    revisao: int = Field(validation_alias=AliasChoices("cqrs_revision", "revisao"))


class FeedFilters(Schema):
    ativo: bool | None = None
    q: text(max_length=200) | None = None
    preco_min: DecimalParam | None = None
    preco_max: DecimalParam | None = None
    ordering: Ordering = "-atualizado_em"


class PageQuery(Schema):
    limit: int = Field(100, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=10**12)


class FeedPageOut(Schema):
    items: list[FeedItemOut]
    count: int
