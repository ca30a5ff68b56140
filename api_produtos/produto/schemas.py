"""Request and response bodies of the Produto API."""

from __future__ import annotations

from datetime import datetime

from ninja import Schema
from pydantic import StrictBool

from django_tools.chassis.ninja import MAX_INT, Money, json_int, text
from produto.models import DESCRICAO_MAX_LENGTH

Sku = text(min_length=1, max_length=64, strip=True)
Nome = text(min_length=1, max_length=200, strip=True)
Descricao = text(max_length=DESCRICAO_MAX_LENGTH)
# Body fields take JSON types as the schema states them: `"5"` is not an integer, `0` is not a
# boolean.
Estoque = json_int(ge=0, le=MAX_INT)


class ProdutoIn(Schema):
    """Body of POST and PUT: the whole writable product."""

    sku: Sku
    nome: Nome
    descricao: Descricao = ""
    preco: Money
    estoque: Estoque = 0
    ativo: StrictBool = True


class ProdutoPatch(Schema):
    """Body of PATCH: any subset of the writable fields; `null` is not a value of any of them."""

    sku: Sku = None
    nome: Nome = None
    descricao: Descricao = None
    preco: Money = None
    estoque: Estoque = None
    ativo: StrictBool = None


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
