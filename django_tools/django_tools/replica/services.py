"""Writes on a replica other than applying events: what django-cqrs's own maintenance commands
do (delete rows the master no longer has, clear a model before a bulk load), done by the same
rules as applying — a deleted row leaves its tombstone, and every change bumps the replica's
version (which caches of the replica's reads are keyed on)."""

from __future__ import annotations

from typing import Any

from dj_cqrs.constants import SignalType
from django.db import models, router, transaction
from django.db.models import F
from django.utils import timezone

from django_tools.replica.apply import Change, apply_changes
from django_tools.replica.messages import Event
from django_tools.replica.models import ReplicaState, Tombstone


def delete_rows(model: type[models.Model], pks: list[Any]) -> int:
    """Delete these rows (those that exist) as a master's DELETE would: one revision above each
    row's, with its tombstone. Returns how many were deleted."""
    using = router.db_for_write(model)
    with transaction.atomic(using=using):
        rows = model._default_manager.db_manager(using).filter(pk__in=pks)
        rows = rows.values_list("pk", "cqrs_revision")
        now = str(timezone.now())
        changes = [
            Change(
                Event(model.CQRS_ID, SignalType.DELETE, pk, revision + 1,
                      {"id": pk, "cqrs_revision": revision + 1, "cqrs_updated": now}),
                model, pk, None,
            )
            for pk, revision in rows
        ]  # fmt: skip
        if not changes:
            return 0
        return sum(outcome == "applied" for outcome in apply_changes(changes))


def clear(model: type[models.Model]) -> int:
    """Every row of the model and every tombstone of its CQRS_ID gone (a bulk load starts from
    nothing: an old tombstone would hide the row it loads), and the version bumped."""
    using = router.db_for_write(model)
    with transaction.atomic(using=using):
        deleted, _ = model._default_manager.db_manager(using).all().delete()
        # A model's tombstones and state live in its database (django_tools.replica.apply).
        Tombstone.objects.using(using).filter(cqrs_id=model.CQRS_ID).delete()
        bumped = (
            ReplicaState.objects.using(using)
            .filter(cqrs_id=model.CQRS_ID)
            .update(version=F("version") + 1, applied_at=timezone.now())
        )
        if not bumped:
            ReplicaState.objects.using(using).create(
                cqrs_id=model.CQRS_ID, version=1, instance_pk="", revision=0,
                signal_type="CLEAR", applied_at=timezone.now(),
            )  # fmt: skip
    return deleted
