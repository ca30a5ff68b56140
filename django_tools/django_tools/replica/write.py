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

The state the decision reads (`read_state`: the rows' revisions and their tombstones) and the
replica's state (`record_last`) are SQL built once and cached — per model and connection, and
per key count padded to a power of two, up to `STATE_PKS_MAX` keys — run on the connection's
cursor with values adapted by their fields and read back through the ORM's converters; a batch
of more keys, or a key the cached path cannot adapt (a composite key), goes through the ORM.
On PostgreSQL a batch's transaction runs in psycopg's pipeline mode (`_pipelined`): only the
reads, the pipeline's end and the commit wait for the server; and its statements are prepared
ones of the session (`django_tools.db.prepared`), planned once.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Iterator
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connections, models, router, transaction
from django.utils import timezone

from django_tools.db import prepared
from django_tools.locks import advisory_key
from django_tools.replica.decision import RowState
from django_tools.replica.hooks import HookFailed, inside_apply
from django_tools.replica.messages import InvalidData
from django_tools.replica.models import ReplicaState, Tombstone
from django_tools.replica.values import Change

logger = logging.getLogger(__name__)


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
            pipelined = _pipelined(connections[alias])  # decided outside the atomic block
            stack.enter_context(transaction.atomic(using=alias))
            # The pipeline inside the transaction, not around it: psycopg syncs a pipeline (a
            # round trip) to check the transaction status whenever autocommit changes, which
            # Django's outermost atomic does on entry and after its commit. Inside, the batch
            # waits for the server three times (the reads, the pipeline's end, the COMMIT)
            # instead of five: one-change batches ~940 -> ~800 µs wall (tests/bench_apply.py).
            stack.enter_context(pipelined)
        yield


#: PostgreSQL: a batch's transaction in psycopg's pipeline mode (`_pipelined`).
PIPELINE = True


def _pipelined(connection) -> contextlib.AbstractContextManager:
    """PostgreSQL: the transaction's statements in psycopg's pipeline mode. A statement whose
    result nobody reads (BEGIN, the row locks, the upsert, the replica's state) does not wait
    for the server: only a read does (the state the decision needs), the pipeline's end and the
    commit after it. A one-message batch went from eight round trips (each a wait for a server
    process on the same two cores) to three. An error of a write comes back at the pipeline's
    end, inside the atomic block, which rolls the transaction back as before; psycopg raises it
    there, outside Django's cursor, so it is translated to Django's own error class here (an
    IntegrityError stays one). Not inside an atomic block opened by the caller (a savepoint):
    there the caller owns the transaction."""
    if not PIPELINE or connection.vendor != "postgresql" or connection.in_atomic_block:
        return contextlib.nullcontext()
    with connection.cursor():
        pass  # connected, and health-checked when due, before the pipeline
    return _pipeline(connection)


@contextlib.contextmanager
def _pipeline(connection) -> Iterator[None]:
    with connection.wrap_database_errors, connection.connection.pipeline():
        yield


def lock_rows(model: type[models.Model], pks: set) -> None:
    connection = connections[database_of(model)]
    if connection.vendor != "postgresql":
        return  # SQLite: the IMMEDIATE transaction holds the database's write lock already
    keys = sorted(advisory_key(f"{model.CQRS_ID}:{pk}") for pk in pks)
    with prepared.cursor(connection) as cursor:
        # One statement, keys in ascending order: two batches that share rows wait for each
        # other instead of deadlocking.
        prepared.run(
            cursor, "SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k ORDER BY k",
            [keys],
        )  # fmt: skip


def read_state(model: type[models.Model], pks: set, alias: str) -> dict[Any, RowState]:
    """The revisions of the rows and tombstones of `pks` (read after `lock_rows`)."""
    if not pks:
        return {}
    connection = connections[alias]
    plan = _state_plan(model, connection) if len(pks) <= STATE_PKS_MAX else None
    if plan is None:
        return _read_state_orm(model, pks, alias)
    keys = list(pks)
    size = _padded(len(keys))
    rows_sql, tombs_sql = plan.statements(size)
    # The IN lists are padded to `size` with the first key again (a repeated value selects
    # nothing more), so a handful of cached texts serve every batch size.
    pk_params = [plan.prep_pk(pk, connection) for pk in keys]
    pk_params += pk_params[:1] * (size - len(keys))
    tomb_params = [plan.prep_instance_pk(str(pk), connection) for pk in keys]
    tomb_params += tomb_params[:1] * (size - len(keys))
    # Both sent before either is read: in a pipeline (PostgreSQL) they share a round trip.
    with prepared.cursor(connection) as rows_cursor, prepared.cursor(connection) as tombs_cursor:
        prepared.run(rows_cursor, rows_sql, pk_params)
        prepared.run(tombs_cursor, tombs_sql, [plan.cqrs_id_param, *tomb_params])
        rows = dict(_converted(rows_cursor.fetchall(), plan.row_converters, connection))
        tombs = dict(_converted(tombs_cursor.fetchall(), plan.tomb_converters, connection))
    return {pk: RowState(rows.get(pk), tombs.get(str(pk))) for pk in pks}


def _read_state_orm(model: type[models.Model], pks: set, alias: str) -> dict[Any, RowState]:
    """`read_state` through the ORM: for what `_state_plan` cannot be sure of, and batches of
    more than STATE_PKS_MAX keys."""
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
    connection = connections[alias]
    sql, preps = _record_last_sql(connection)
    # One upsert: the model's first change inserts the row (version 1, a new incarnation), every
    # later one updates it (version + 1). Each value adapted by its field as the ORM does, None
    # sent as a parameter (NULL). Nothing to read back, so it never waits in a pipeline; and two
    # workers' first changes no longer race to insert the row (the loser's batch failed on the
    # unique cqrs_id and waited for a retry).
    fields["cqrs_id"] = model.CQRS_ID
    fields["incarnation"] = _INCARNATION_FIELD.get_default()  # used only by the insert
    with prepared.cursor(connection) as cursor:
        prepared.run(cursor, sql, [prep(fields[name], connection) for name, prep in preps])


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
    with prepared.cursor(connection) as cursor:
        cursor.executemany(_upsert_sql(model, connection), params)  # prepared where it can be


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


# --- read_state and record_last as cached SQL -------------------------------------------------
#
# At low load a batch is one message, and building and compiling the ORM queries of
# `read_state` and `record_last` was most of its CPU (py-spy of a `cqrs_consume` worker: ~61 %,
# of ~2.7 ms per message). Their SQL is built once here and run on the connection's cursor, with
# the values adapted by their fields and the values read converted by the backend's and the
# fields' converters (what `SQLCompiler.get_converters` / `apply_converters` do), so a UUID or
# custom-typed key reads back as the same Python value as `Change.pk`.

#: A batch of more keys reads its state through the ORM. Below, the IN lists are padded to a
#: power of two, so a model has at most log2(STATE_PKS_MAX) + 1 cached texts per connection.
STATE_PKS_MAX = 1024

_CQRS_ID_FIELD = ReplicaState._meta.get_field("cqrs_id")
_INCARNATION_FIELD = ReplicaState._meta.get_field("incarnation")
_RECORDED = ("instance_pk", "revision", "signal_type", "master_updated_at", "applied_at",
             "correlation_id")  # fmt: skip


def _padded(count: int) -> int:
    return 1 << (count - 1).bit_length()


def _converted(rows: list[tuple], converters: list[tuple[int, list, Any]], connection):
    if not converters:
        return rows
    converted = []
    for row in rows:
        row = list(row)
        for pos, convs, col in converters:
            value = row[pos]
            for converter in convs:
                value = converter(value, col, connection)
            row[pos] = value
        converted.append(row)
    return converted


def _converters_of(fields: list[models.Field], connection) -> list[tuple[int, list, Any]]:
    """Per selected column, the converters `SQLCompiler.get_converters` would apply."""
    converters = []
    for pos, field in enumerate(fields):
        col = field.get_col(field.model._meta.db_table)
        convs = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
        if convs:
            converters.append((pos, convs, col))
    return converters


class _StatePlan:
    """`read_state`'s two SELECTs for one model on one connection (the backend's converters
    are bound to its connection): the adaptation of their parameters, the conversion of their
    results, and their texts per padded key count."""

    def __init__(self, model: type[models.Model], connection) -> None:
        pk = model._meta.pk
        revision = model._meta.get_field("cqrs_revision")
        tomb_pk = Tombstone._meta.get_field("instance_pk")
        tomb_revision = Tombstone._meta.get_field("cqrs_revision")
        tomb_cqrs_id = Tombstone._meta.get_field("cqrs_id")
        table = model._meta.db_table
        if pk.model._meta.db_table != table or revision.model._meta.db_table != table:
            # Multi-table inheritance: the key and the revision are in two tables (a join).
            raise TypeError(f"{model.__name__}'s key and cqrs_revision are not in {table}")
        self.prep_pk = pk.get_db_prep_value
        self.prep_instance_pk = tomb_pk.get_db_prep_value
        self.cqrs_id_param = tomb_cqrs_id.get_db_prep_value(model.CQRS_ID, connection)
        self.row_converters = _converters_of([pk, revision], connection)
        self.tomb_converters = _converters_of([tomb_pk, tomb_revision], connection)
        quote = connection.ops.quote_name
        self._rows = (
            f"SELECT {quote(pk.column)}, {quote(revision.column)} "  # nosec B608 # quoted identifiers, values are parameters
            f"FROM {quote(table)} WHERE {quote(pk.column)} IN "
        )
        self._tombs = (
            f"SELECT {quote(tomb_pk.column)}, {quote(tomb_revision.column)} "  # nosec B608 # quoted identifiers, values are parameters
            f"FROM {quote(Tombstone._meta.db_table)} WHERE {quote(tomb_cqrs_id.column)} = %s "
            f"AND {quote(tomb_pk.column)} IN "
        )
        self.texts: dict[int, tuple[str, str]] = {}

    def statements(self, size: int) -> tuple[str, str]:
        texts = self.texts.get(size)
        if texts is None:
            placeholders = f"({', '.join(['%s'] * size)})"
            texts = self.texts[size] = (self._rows + placeholders, self._tombs + placeholders)
        return texts


#: Per connection (weakly: a thread's connection goes with its thread), per model: its plan, or
#: None where `read_state` stays on the ORM.
_STATE_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _state_plan(model: type[models.Model], connection) -> _StatePlan | None:
    plans = _STATE_PLANS.get(connection)
    if plans is None:
        plans = _STATE_PLANS[connection] = {}
    if model not in plans:
        plans[model] = _build_state_plan(model, connection)
    return plans[model]


def _build_state_plan(model: type[models.Model], connection) -> _StatePlan | None:
    if model._meta.is_composite_pk:
        return None  # a composite key is a row value, not one parameter: the ORM knows how
    try:
        return _StatePlan(model, connection)
    except Exception:  # a field this cannot adapt or convert as the ORM would: the ORM's path
        logger.warning("read_state of %s stays on the ORM", model.__name__, exc_info=True)
        return None


_RECORD_SQL: dict[str, tuple[str, list[tuple[str, Any]]]] = {}


def _record_last_sql(connection) -> tuple[str, list[tuple[str, Any]]]:
    """`record_last`'s upsert (INSERT … ON CONFLICT (cqrs_id) DO UPDATE, on SQLite and
    PostgreSQL alike), written here: the text must not depend on the values (the ORM writes
    `= NULL` for None) to be built once."""
    key = connection.vendor
    if key not in _RECORD_SQL:
        quote = connection.ops.quote_name
        table = quote(ReplicaState._meta.db_table)
        inserted = [
            ReplicaState._meta.get_field(name) for name in (*_RECORDED, "cqrs_id", "incarnation")
        ]
        version = quote(ReplicaState._meta.get_field("version").column)
        updates = ", ".join(
            [f"{version} = {table}.{version} + 1",
             *(f"{quote(f.column)} = EXCLUDED.{quote(f.column)}"
               for f in inserted if f.name in _RECORDED)]
        )  # fmt: skip
        columns = ", ".join(quote(f.column) for f in inserted)
        values = ", ".join(["%s"] * len(inserted))
        _RECORD_SQL[key] = (
            f"INSERT INTO {table} ({columns}, {version}) VALUES ({values}, 1) "  # nosec B608 # quoted identifiers, values are parameters
            f"ON CONFLICT ({quote(_CQRS_ID_FIELD.column)}) DO UPDATE SET {updates}",
            [(f.name, f.get_db_prep_save) for f in inserted],
        )
    return _RECORD_SQL[key]
