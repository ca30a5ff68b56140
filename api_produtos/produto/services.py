"""Writes on Produto. Each one runs in a transaction, and the outbox writes the django-cqrs
event that replicates it inside that same transaction (see `models.Produto`): the change and its
event commit together, and the relay publishes the event afterwards."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from django_tools.chassis.errors import ConflictError
from produto.models import Produto

#: Fields a client may write; the rest is managed by the service.
WRITABLE_FIELDS = ("sku", "nome", "descricao", "preco", "estoque", "ativo")


def _save(produto: Produto) -> Produto:
    produto.full_clean(validate_unique=False, validate_constraints=False)
    try:
        with transaction.atomic():
            produto.save()
    except IntegrityError as exc:
        # The only uniqueness rule is the SKU; the database enforces it race-free.
        raise ConflictError(f"A produto with sku {produto.sku!r} already exists") from exc
    return produto


def produto_create(
    *,
    sku: str,
    nome: str,
    preco: Any,
    descricao: str = "",
    estoque: int = 0,
    ativo: bool = True,
) -> Produto:
    produto = Produto(
        sku=sku, nome=nome, descricao=descricao, preco=preco, estoque=estoque, ativo=ativo
    )
    return _save(produto)


@transaction.atomic
def produto_update(*, produto_id: int, data: dict[str, Any]) -> Produto:
    """Apply `data` (a subset of WRITABLE_FIELDS) to the product; PUT passes them all."""
    produto = Produto.objects.select_for_update().get(pk=produto_id)
    changed = False
    for field, value in data.items():
        if field not in WRITABLE_FIELDS:
            raise ValueError(f"{field!r} is not writable")
        if getattr(produto, field) != value:
            setattr(produto, field, value)
            changed = True
    if changed:
        _save(produto)
        produto.refresh_from_db()
    return produto


@transaction.atomic
def produto_delete(*, produto_id: int) -> None:
    produto = Produto.objects.select_for_update().get(pk=produto_id)
    produto.delete()
