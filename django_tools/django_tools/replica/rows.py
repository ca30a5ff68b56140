"""The replica's rows in primary-key order, a page at a time, with a checksum each: what a
master's reconciliation compares with its own rows."""

from __future__ import annotations

from typing import Any

from django.db import models

from django_tools.checksum import row_checksum
from django_tools.replica.apply import database_of, replica_model

#: Never compared: the key, and the replica's own bookkeeping.
EXCLUDED = {"cqrs_updated"}


def compared_fields(model: type[models.Model]) -> list[str]:
    pk = model._meta.pk.name
    return sorted(
        f.name for f in model._meta.concrete_fields if f.name != pk and f.name not in EXCLUDED
    )


def rows_page(cqrs_id: str, after: Any, limit: int) -> dict[str, Any]:
    model = replica_model(cqrs_id)
    fields = compared_fields(model)
    pk_name = model._meta.pk.name
    qs = model._default_manager.order_by(pk_name)
    if after is not None:
        qs = qs.filter(**{f"{pk_name}__gt": after})
    rows = [
        [values[pk_name], values["cqrs_revision"], row_checksum(values, fields)]
        for values in qs.values(pk_name, *fields)[:limit]
    ]
    return {"cqrs_id": cqrs_id, "fields": fields, "rows": rows}


def tombstones(cqrs_id: str, pks: list[str]) -> dict[str, Any]:
    """The replica's tombstones among `pks`: `[pk, revision]` each (reconciliation asks, to
    repair a row the replica believes deleted while the master still has it)."""
    from django_tools.replica.models import Tombstone

    model = replica_model(cqrs_id)  # an unknown CQRS_ID is an error, as for the rows
    # A model's tombstones live in its database (django_tools.replica.apply).
    found = (
        Tombstone.objects.using(database_of(model))
        .filter(cqrs_id=cqrs_id, instance_pk__in=pks)
        .values_list("instance_pk", "cqrs_revision")
    )
    return {"cqrs_id": cqrs_id, "tombstones": [[pk, revision] for pk, revision in found]}
