"""Reads of Produto."""

from __future__ import annotations

from django.db.models import Q, QuerySet
from django.shortcuts import get_object_or_404

from produto.models import Produto


def produto_list(*, ativo: bool | None = None, q: str | None = None) -> QuerySet[Produto]:
    qs = Produto.objects.all()
    if ativo is not None:
        qs = qs.filter(ativo=ativo)
    if q:
        qs = qs.filter(Q(nome__icontains=q) | Q(sku__icontains=q))
    return qs.order_by("id")


def produto_get(*, produto_id: int) -> Produto:
    return get_object_or_404(Produto, pk=produto_id)
