"""django-outbox-pattern wired to the lab's models, as its README says to use it (lab only:
loaded by the overlay settings `outbox_pattern_settings` / `outbox_pattern_feed_settings`).

Master (`MasterConfig.ready`): `@publish([Config(destination, serializer=...)])` applied to
`Produto` — the decorator's `save()` writes the `Published` row in the model's transaction. The
decorator covers `save()` only; a delete writes its row with `Published.objects.create` in the
delete's transaction, the README's "Publish message via outbox" recipe. django-cqrs's own
producing (this project's outbox and stock publish-on-commit) is switched off with its own
switch, `CQRS_PRODUCE = False`: the peer alone carries the changes.

Replica (`apply_change`): the callback `manage.py subscribe` runs, as the README's: the change and
`payload.save()` (the `Received` row its idempotence rests on) in one transaction.
"""

from __future__ import annotations

import os
from decimal import Decimal

from django.apps import AppConfig

#: Where the master publishes (a STOMP destination: the `amq.topic` exchange, this routing key).
DESTINATION_ENV = "OUTBOX_PATTERN_DESTINATION"
DEFAULT_DESTINATION = "/topic/produto"
#: The fields the replica takes from a change's body.
MIRROR_FIELDS = (
    "sku", "nome", "descricao", "preco", "estoque", "ativo", "criado_em", "atualizado_em",
    "cqrs_revision", "cqrs_updated",
)  # fmt: skip


def destination() -> str:
    return os.environ.get(DESTINATION_ENV) or DEFAULT_DESTINATION


def produto_body(produto) -> dict:
    """The message of a save: the row as django-cqrs serializes it (preço as an exact string,
    the revision the save wrote) — the decorator's default serializer cannot read a revision
    still held as an F() expression."""
    return {"op": "save", **produto.to_cqrs_dict()}


def delete_body(pk: int) -> dict:
    return {"op": "delete", "id": pk}


def persistent_headers(message) -> dict:
    """The library's headers plus `persistent: true`: RabbitMQ keeps a STOMP message on disk
    only when asked, and a restart of the broker drops the others. Set through the library's
    own hook (DEFAULT_GENERATE_HEADERS)."""
    from django_outbox_pattern.headers import generate_headers

    return {**generate_headers(message), "persistent": "true"}


def mirror_fields(body: dict) -> dict:
    """The ProdutoMirror columns of a save's body."""
    fields = {name: body[name] for name in MIRROR_FIELDS}
    fields["preco"] = Decimal(str(fields["preco"]))
    return fields


def apply_change(payload) -> None:
    """`manage.py subscribe`'s callback: the change into ProdutoMirror and the message marked
    received, in one transaction (an upsert by key: what the message says is the row)."""
    from django.db import transaction

    from feed.models import ProdutoMirror

    body = payload.body
    with transaction.atomic():
        if body.get("op") == "delete":
            ProdutoMirror.objects.filter(pk=body["id"]).delete()
        else:
            ProdutoMirror.objects.update_or_create(pk=body["id"], defaults=mirror_fields(body))
        payload.save()


class MasterConfig(AppConfig):
    """The master's side: Produto publishes through the peer's outbox only."""

    name = "apis_lab.peers"
    label = "outbox_pattern_master"
    verbose_name = "django-outbox-pattern (lab)"

    def ready(self) -> None:
        from django.db import models
        from django_outbox_pattern.decorators import Config, publish
        from django_outbox_pattern.models import Published

        from produto.models import Produto

        Produto.CQRS_PRODUCE = False  # neither this project's outbox nor stock django-cqrs
        Produto.outbox_pattern_body = produto_body
        target = destination()
        publish([Config(destination=target, serializer="outbox_pattern_body")])(Produto)

        def on_delete(sender, instance, using, **kwargs) -> None:
            # Produto.delete() runs in a transaction (TransactionalWritesMixin): this row
            # commits with the delete, or not at all.
            Published.objects.using(using).create(destination=target, body=delete_body(instance.pk))

        models.signals.post_delete.connect(on_delete, sender=Produto, weak=False)
