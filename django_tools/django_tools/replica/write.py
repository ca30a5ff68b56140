"""Writing decided changes: the rows' locks, the state the decision reads, the two ways a
model's rows are written (in bulk, or through its own hooks), tombstones, and the replica's
state. Everything runs inside the caller's transaction (`transaction_for`), on the database
each model is written to (`database_of`): a model's tombstones and state live there too, so a
delete and its tombstone commit together.

- a model that uses none of django-cqrs's replica hooks (`hooks.hooks_of`) is written in bulk:
  one prebuilt `INSERT … ON CONFLICT DO UPDATE` for a batch's saves, one `DELETE` for its
  deletes;
- a model that uses any is written through them, one change at a time, as django-cqrs's own
  consumer would: its `cqrs_save(master_data, previous_data, sync, meta)` and
  `cqrs_delete(master_data, meta)`, whose default implementations reach the model's `cqrs`
  manager (inside `hooks.inside_apply`, so it writes instead of applying again).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connections, models, router, transaction
from django.db.models import F
from django.utils import timezone

from django_tools.locks import advisory_key
from django_tools.replica.decision import RowState
from django_tools.replica.hooks import HookFailed, inside_apply
from django_tools.replica.messages import InvalidData
from django_tools.replica.models import ReplicaState, Tombstone
from django_tools.replica.values import Change


def database_of(model: type[models.Model]) -> str:
    """The database a replica model's rows, tombstones and state are written to (and read from,
    when applying)."""
    return router.db_for_write(model)


@contextlib.contextmanager
def transaction_for(changes: list[Change]) -> Iterator[None]:
    """The transaction `apply_changes(changes)` runs in: one on each database the changes'
    models are written to (usually one). A batch that spans two databases commits on each in
    turn; a failure between the two leaves it half applied, and its redelivery, applied again
    (idempotent), completes it."""
    aliases = sorted({database_of(change.model) for change in changes})
    with contextlib.ExitStack() as stack:
        for alias in aliases:
            stack.enter_context(transaction.atomic(using=alias))
        yield


def lock_rows(model: type[models.Model], pks: set) -> None:
    connection = connections[database_of(model)]
    if connection.vendor != "postgresql":
        return  # SQLite: the IMMEDIATE transaction holds the database's write lock already
    keys = sorted(advisory_key(f"{model.CQRS_ID}:{pk}") for pk in pks)
    with connection.cursor() as cursor:
        # One statement, keys in ascending order: two batches that share rows wait for each
        # other instead of deadlocking.
        cursor.execute(
            "SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k ORDER BY k", [keys]
        )


def read_state(model: type[models.Model], pks: set, alias: str) -> dict[Any, RowState]:
    """The revisions of the rows and tombstones of `pks` (read after `lock_rows`)."""
    rows = dict(
        model._default_manager.db_manager(alias)
        .filter(pk__in=pks)
        .values_list("pk", "cqrs_revision")
    )
    tombs = dict(
        Tombstone.objects.using(alias)
        .filter(cqrs_id=model.CQRS_ID, instance_pk__in=[str(pk) for pk in pks])
        .values_list("instance_pk", "cqrs_revision")
    )
    return {pk: RowState(rows.get(pk), tombs.get(str(pk))) for pk in pks}


def write_in_bulk(
    model: type[models.Model], writes: dict[Any, Change], had_tombstone: set, alias: str
) -> None:
    """Each row's deciding change: the saves in one upsert, the deletes in one DELETE."""
    saves = [c for c in writes.values() if c.values is not None]
    deletes = [c for c in writes.values() if c.values is None]
    if saves:
        connection = connections[alias]
        _upsert(
            model,
            [c.params if c.params is not None else row_params(model, c.values, connection)
             for c in saves],
            alias,
        )  # fmt: skip
        revived = [str(c.pk) for c in saves if c.pk in had_tombstone]
        if revived:
            Tombstone.objects.using(alias).filter(
                cqrs_id=model.CQRS_ID, instance_pk__in=revived
            ).delete()
    if deletes:
        model._default_manager.db_manager(alias).filter(pk__in=[c.pk for c in deletes]).delete()
        _bury(model, deletes, alias)


def write_through_hooks(
    model: type[models.Model], applied: list[Change], had_tombstone: set, alias: str
) -> None:
    """Every applied change in order, through the model's own `cqrs_save` / `cqrs_delete`."""
    buried = set(had_tombstone)
    for change in applied:
        event = change.event
        with inside_apply(model):
            try:
                if change.values is None:
                    hook = "cqrs_delete"
                    result = model.cqrs_delete(event.data, meta=event.meta)
                else:
                    hook = "cqrs_save"
                    result = model.cqrs_save(
                        event.data, previous_data=event.previous_data, sync=event.is_sync,
                        meta=event.meta,
                    )  # fmt: skip
            except ValidationError as exc:  # the model's hooks refused the data: for good
                raise InvalidData(f"{model.__name__} hooks: {' '.join(exc.messages)}") from exc
        if not result:
            # django-cqrs's consumer acks only `if instance and exception is None`: a falsy
            # return (None, False, ...) is a failure there, retried. Here too: raised, so the
            # transaction (row, tombstone, version) rolls back and `failures.classify` retries
            # the message, then dead-letters it after the last retry.
            raise HookFailed(
                f"{model.__name__}.{hook}() returned {result!r} for {change.pk} revision "
                f"{change.revision}: django-cqrs takes a falsy return as a failure"
            )
        if change.values is None:
            _bury(model, [change], alias)
            buried.add(change.pk)
        elif change.pk in buried:
            Tombstone.objects.using(alias).filter(
                cqrs_id=model.CQRS_ID, instance_pk=str(change.pk)
            ).delete()
            buried.discard(change.pk)


def record_last(model: type[models.Model], change: Change, alias: str) -> None:
    """The replica's state for the model: the last change applied, and its version +1 (caches
    of the replica's reads key on it)."""
    fields = {
        "instance_pk": str(change.pk),
        "revision": change.revision,
        "signal_type": change.event.signal_type,
        "master_updated_at": change.updated,
        "applied_at": timezone.now(),
        "correlation_id": str(change.event.correlation_id or "")[:128],
    }
    state = ReplicaState.objects.using(alias).filter(cqrs_id=model.CQRS_ID)
    if not state.update(version=F("version") + 1, **fields):
        ReplicaState.objects.using(alias).create(cqrs_id=model.CQRS_ID, version=1, **fields)


def _bury(model: type[models.Model], deletes: list[Change], alias: str) -> None:
    """The tombstones of applied deletes (a later save at or below their revision is stale)."""
    now = timezone.now()
    Tombstone.objects.using(alias).bulk_create(
        [
            Tombstone(
                cqrs_id=model.CQRS_ID, instance_pk=str(c.pk), cqrs_revision=c.revision,
                deleted_at=now,
            )
            for c in deletes
        ],
        update_conflicts=True,
        unique_fields=["cqrs_id", "instance_pk"],
        update_fields=["cqrs_revision", "deleted_at"],
    )  # fmt: skip


def row_params(model: type[models.Model], values: dict[str, Any], connection) -> list[Any]:
    """A save's upsert parameters, in the order of `_upsert_sql`'s columns. Computed when the
    message is validated, outside the write transaction: on SQLite that transaction holds the
    database's write gate, which every consumer worker waits for, so only the write itself
    should happen inside it. The values come out of the fields' clean(): already Python values
    of the right type, so only the database adaptation is left (`prepared=True` skips another
    to_python)."""
    return [prep(values[attname], connection, prepared=True) for attname, prep in _preps(model)]


_PREPS: dict[type[models.Model], list[tuple[str, Any]]] = {}


def _preps(model: type[models.Model]) -> list[tuple[str, Any]]:
    preps = _PREPS.get(model)
    if preps is None:
        preps = _PREPS[model] = [
            (field.attname, field.get_db_prep_value) for field in model._meta.concrete_fields
        ]
    return preps


def _upsert(model: type[models.Model], params: list[list[Any]], alias: str) -> None:
    """INSERT … ON CONFLICT (pk) DO UPDATE for all rows in one executemany (SQLite and
    PostgreSQL): what bulk_create(update_conflicts=True) does, without compiling the SQL
    again for every batch. Safe because the caller holds the rows' locks."""
    connection = connections[alias]
    with connection.cursor() as cursor:
        cursor.executemany(_upsert_sql(model, connection), params)


_UPSERT_SQL: dict[tuple[type, str], str] = {}


def _upsert_sql(model: type[models.Model], connection) -> str:
    key = (model, connection.vendor)
    if key not in _UPSERT_SQL:
        quote = connection.ops.quote_name
        fields = model._meta.concrete_fields
        pk = model._meta.pk
        columns = ", ".join(quote(f.column) for f in fields)
        placeholders = ", ".join(["%s"] * len(fields))
        updates = ", ".join(
            f"{quote(f.column)} = EXCLUDED.{quote(f.column)}" for f in fields if f is not pk
        )
        _UPSERT_SQL[key] = (
            f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES ({placeholders}) "  # nosec B608 # quoted identifiers, values are parameters
            f"ON CONFLICT ({quote(pk.column)}) DO UPDATE SET {updates}"
        )
    return _UPSERT_SQL[key]
