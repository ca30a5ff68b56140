"""Reads of the feed."""

from __future__ import annotations

from decimal import Decimal

from django.db.models import Count, Q, QuerySet, Window
from django.shortcuts import get_object_or_404

from feed.models import ProdutoMirror

#: Public ordering names → model fields. `id` breaks ties so pages never overlap.
ORDERINGS = {"nome": "nome", "preco": "preco", "atualizado_em": "atualizado_em"}
DEFAULT_ORDERING = "-atualizado_em"


def feed_list(
    *,
    ativo: bool | None = None,
    q: str | None = None,
    preco_min: Decimal | None = None,
    preco_max: Decimal | None = None,
    ordering: str = DEFAULT_ORDERING,
) -> QuerySet[ProdutoMirror]:
    qs = ProdutoMirror.objects.all()
    if ativo is not None:
        qs = qs.filter(ativo=ativo)
    if q:
        qs = qs.filter(Q(nome__icontains=q) | Q(sku__icontains=q))
    if preco_min is not None:
        qs = qs.filter(preco__gte=preco_min)
    if preco_max is not None:
        qs = qs.filter(preco__lte=preco_max)
    descending = ordering.startswith("-")
    field = ORDERINGS[ordering.removeprefix("-")]
    prefix = "-" if descending else ""
    return qs.order_by(f"{prefix}{field}", f"{prefix}id")


def feed_page(*, offset: int, limit: int, **filters) -> tuple[list[ProdutoMirror], int]:
    """One page and the total, from one statement (`COUNT(*) OVER ()`): a page and its count
    never disagree while the consumer is writing (two queries would see two moments)."""
    qs = feed_list(**filters)
    rows = list(qs.annotate(total=Window(Count("pk")))[offset : offset + limit])
    return rows, rows[0].total if rows else qs.count()


def feed_get(*, produto_id: int) -> ProdutoMirror:
    return get_object_or_404(ProdutoMirror, pk=produto_id)
