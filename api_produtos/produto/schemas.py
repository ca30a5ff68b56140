"""Request and response bodies of the Produto API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from ninja import Field, Schema

from django_tools.ninja import MAX_INT, Money, SafeStr, text

Sku = text(min_length=1, max_length=64, strip=True)
Nome = text(min_length=1, max_length=200, strip=True)
Estoque = Annotated[int, Field(ge=0, le=MAX_INT)]


class ProdutoIn(Schema):
    """Body of POST and PUT: the whole writable product."""

    sku: Sku
    nome: Nome
    descricao: SafeStr = ""
    preco: Money
    estoque: Estoque = 0
    ativo: bool = True


class ProdutoPatch(Schema):
    """Body of PATCH: any subset of the writable fields; `null` is not a value of any of them."""

    sku: Sku = None
    nome: Nome = None
    descricao: SafeStr = None
    preco: Money = None
    estoque: Estoque = None
    ativo: bool = None


class ProdutoOut(Schema):
    id: int
    sku: str
    nome: str
    descricao: str
    preco: Money
    estoque: int
    ativo: bool
    criado_em: datetime
    atualizado_em: datetime


class ProdutoFilters(Schema):
    ativo: bool | None = None
    q: text(max_length=200) | None = None
