"""Events → rows: the one place where a replicated event changes the replica's database.

Rules, per row (the row's primary key):

- a save applies only if its revision is higher than the row's (a sync also at the same
  revision, to repair a row in place); duplicates and older revisions are ignored;
- a delete removes the row and leaves a tombstone with its revision; a save at or below that
  revision is stale (a redelivery, a late message of another worker) and is ignored, so a
  delete is never undone;
- the outcome does not depend on delivery order, duplicates or how many workers apply
  concurrently: each batch locks its rows' keys (PostgreSQL advisory locks; SQLite's
  `BEGIN IMMEDIATE` already serialises writers) before it reads and compares revisions.

`apply_changes` runs inside the caller's transaction, opened with `transaction_for(changes)` on
the database each model is written to (`router.db_for_write`): a replica model routed to another
database keeps its atomicity and its row locks there. A model's tombstones and replica state live
in the same database as its rows (they are read and written with `using(alias)`), so a delete and
its tombstone commit together. The consumer acknowledges the messages only after that
transaction committed.

Two ways to write, chosen per model (`hooks_of`):

- a model that uses none of django-cqrs's replica hooks is written in bulk: one prebuilt
  `INSERT … ON CONFLICT DO UPDATE` for a batch's saves, one `DELETE` for its deletes;
- a model that uses any — `CQRS_MAPPING`, `CQRS_CUSTOM_SERIALIZATION`, its own `cqrs_save`,
  `cqrs_create`, `cqrs_update` or `cqrs_delete`, or `pre/post_save`/`pre/post_delete` receivers —
  is written through them, one change at a time, as django-cqrs's own consumer would: its
  `cqrs_save(master_data, previous_data, sync, meta)` and `cqrs_delete(master_data, meta)`, whose
  default implementations reach `cqrs_create` / `cqrs_update` and send the model's signals. The
  decisions stay these rules' (revisions, tombstones, locks), in the same transaction.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from dj_cqrs.registries import ReplicaRegistry
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import connections, models, router, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from django_tools.locks import advisory_key
from django_tools.replica.messages import Event, InvalidData, UnknownCqrsId
from django_tools.replica.models import ReplicaState, Tombstone

APPLIED, DUPLICATE, STALE, DELETED = "applied", "duplicate", "stale", "deleted_before"


class HookFailed(RuntimeError):
    """A replica model's `cqrs_save` / `cqrs_delete` returned a falsy value: not applied. A
    transient failure, as in django-cqrs's consumer (its `should_retry_cqrs`): the model may
    refuse now and accept later (a row it depends on has not arrived yet)."""


@dataclass(frozen=True)
class Change:
    """A validated event, ready to be applied to `model`."""

    event: Event
    model: type[models.Model]
    pk: Any
    #: A save's column values (cleaned), or for a model applied through its hooks the data its
    #: hooks are given (mapped, as django-cqrs maps it); None for a delete.
    values: dict[str, Any] | None
    #: The master's change time (cqrs_updated), for lag metrics and the replica's state.
    updated: datetime | None = None

    @property
    def revision(self) -> int:
        return self.event.revision


# --- which way a model is written -------------------------------------------------------

_HOOK_SIGNALS = (
    models.signals.pre_save,
    models.signals.post_save,
    models.signals.pre_delete,
    models.signals.post_delete,
)
_HOOKS: dict[type[models.Model], tuple[str, ...]] = {}


def hooks_of(model: type[models.Model]) -> tuple[str, ...]:
    """The django-cqrs replica hooks `model` uses (empty: it is written in bulk). Worked out
    once per process, at the model's first change: connect signal receivers in
    `AppConfig.ready()`, as Django recommends (`forget_hooks()` makes it look again)."""
    from dj_cqrs.mixins import ReplicaMixin

    found = _HOOKS.get(model)
    if found is None:
        hooks = []
        if getattr(model, "CQRS_MAPPING", None) is not None:
            hooks.append("CQRS_MAPPING")
        if getattr(model, "CQRS_CUSTOM_SERIALIZATION", False):
            hooks.append("CQRS_CUSTOM_SERIALIZATION")
        for name in ("cqrs_save", "cqrs_create", "cqrs_delete"):
            if getattr(model, name).__func__ is not getattr(ReplicaMixin, name).__func__:
                hooks.append(name)
        if model.cqrs_update is not ReplicaMixin.cqrs_update:
            hooks.append("cqrs_update")
        hooks += [
            f"{signal_name(signal)} receiver"
            for signal in _HOOK_SIGNALS
            if signal.has_listeners(model)
        ]
        found = _HOOKS[model] = tuple(hooks)
    return found


def forget_hooks() -> None:
    _HOOKS.clear()


def signal_name(signal) -> str:
    names = {id(s): n for n, s in vars(models.signals).items() if isinstance(s, type(signal))}
    return names.get(id(signal), "signal")


def replica_model(cqrs_id: str) -> type[models.Model]:
    model = ReplicaRegistry.models.get(cqrs_id)
    if model is None:
        raise UnknownCqrsId(f"no replica model has CQRS_ID {cqrs_id!r}")
    from django_tools.replica.managers import ConvergentReplicaManager

    if not isinstance(getattr(model, "cqrs", None), ConvergentReplicaManager):
        raise ImproperlyConfigured(
            f"{model.__name__} must declare `cqrs = ConvergentReplicaManager()` to be applied "
            "by django_tools.replica"
        )
    return model


def prepare(event: Event) -> Change:
    """Validate the event against its replica model; raises a PermanentFailure if it can never
    be applied."""
    model = replica_model(event.cqrs_id)
    pk_field = model._meta.pk
    if event.is_delete:
        raw_pk = event.data.get(pk_field.name, event.data.get("id"))
        pk = _clean_pk(pk_field, raw_pk, missing=f"a delete without {pk_field.name}")
        return Change(event, model, pk, None)

    updated = _updated(event.data)
    if hooks_of(model):
        return Change(event, model, *_prepare_for_hooks(model, event), updated=updated)
    plans = _plans(model)
    data = event.data
    missing = sorted(plan.name for plan in plans if plan.required and plan.name not in data)
    if missing:
        raise InvalidData(f"missing fields: {', '.join(missing)}")
    # Each field's own clean() (to_python, then its validators), as Model.full_clean runs it,
    # without building a model instance per message.
    values, errors = {}, []
    for plan in plans:
        if plan.name in data:
            raw = data[plan.name]
            wrong_type = _json_type_error(plan.field, raw)
            if wrong_type:
                errors.append(f"{plan.name}: {wrong_type}")
                continue
            if plan.float_to_decimal and isinstance(raw, float):
                raw = Decimal(repr(raw))
        else:
            raw = plan.field.get_default()
        try:
            values[plan.attname] = plan.clean(raw)
        except ValidationError as exc:
            errors.append(f"{plan.name}: {' '.join(exc.messages)}")
    if errors:
        raise InvalidData("; ".join(errors))
    return Change(event, model, values[pk_field.attname], values, updated=updated)


def _updated(data: dict) -> datetime | None:
    value = data.get("cqrs_updated")
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            parsed = parse_datetime(value)
            if parsed is not None and timezone.is_naive(parsed):
                parsed = timezone.make_aware(parsed, UTC)
            return parsed
    return None


def _prepare_for_hooks(model: type[models.Model], event: Event) -> tuple[Any, dict | None]:
    """(pk, the data the hooks get) of a change to a model written through its hooks. The
    data is mapped as django-cqrs maps it (`CQRS_MAPPING`), and checked against the model's
    fields unless the model serializes itself (`CQRS_CUSTOM_SERIALIZATION`)."""
    manager = model.cqrs
    pk_field = model._meta.pk
    if event.is_delete:
        mapped = manager._map_delete_data(event.data)
        if not mapped:
            raise InvalidData(f"a delete without id, cqrs_revision and cqrs_updated for {model}")
        return _clean_pk(pk_field, mapped[pk_field.name]), None
    mapped = manager._map_save_data(event.data)
    if not mapped:
        raise InvalidData(
            "the data does not fit the replica model's CQRS_MAPPING, key or required fields"
        )
    if model.CQRS_CUSTOM_SERIALIZATION:
        return _clean_pk(pk_field, mapped[pk_field.name]), mapped
    errors = []
    for plan in _plans(model):
        if plan.name not in mapped:
            continue
        raw = mapped[plan.name]
        wrong_type = _json_type_error(plan.field, raw)
        if wrong_type:
            errors.append(f"{plan.name}: {wrong_type}")
            continue
        try:
            plan.clean(Decimal(repr(raw)) if plan.float_to_decimal and isinstance(raw, float)
                       else raw)  # fmt: skip
        except ValidationError as exc:
            errors.append(f"{plan.name}: {' '.join(exc.messages)}")
    if errors:
        raise InvalidData("; ".join(errors))
    return _clean_pk(pk_field, mapped[pk_field.name]), mapped


def _clean_pk(pk_field: models.Field, raw: Any, missing: str = "") -> Any:
    wrong_type = _json_type_error(pk_field, raw)
    if wrong_type:
        raise InvalidData(f"{pk_field.name}: {wrong_type}")
    try:
        pk = pk_field.to_python(raw)
    except ValidationError as exc:
        raise InvalidData(f"{pk_field.name}: {'; '.join(exc.messages)}") from None
    if pk is None:
        raise InvalidData(missing or f"no {pk_field.name}")
    return pk


class _FieldPlan:
    """What validating one field of a message takes, worked out once per model: Django's
    `Field.clean()` (to_python, validate, run_validators) without its per-call dispatch, for
    fields that do not override those; the others keep their own `clean()`."""

    def __init__(self, field: models.Field) -> None:
        self.field = field
        self.name, self.attname = field.name, field.attname
        self.required = not field.null
        # A stock django-cqrs master sends decimals as JSON numbers; the float's shortest repr
        # is the decimal it came from ("19.9"), its binary expansion is not.
        self.float_to_decimal = isinstance(field, models.DecimalField)
        kind = type(field)
        plain = (
            kind.clean is models.Field.clean
            and kind.validate is models.Field.validate
            and kind.run_validators is models.Field.run_validators
            and field.editable
            and field.choices is None
        )
        self.clean = self._plain_clean if plain else self._own_clean
        self._to_python = field.to_python
        self._validators = list(field.validators)
        self._empty = field.empty_values
        self._null, self._blank = field.null, field.blank

    def _own_clean(self, raw: Any) -> Any:
        return self.field.clean(raw, None)

    def _plain_clean(self, raw: Any) -> Any:
        value = self._to_python(raw)
        if value is None and not self._null:
            raise ValidationError(self.field.error_messages["null"], code="null")
        if not self._blank and value in self._empty:
            raise ValidationError(self.field.error_messages["blank"], code="blank")
        if value in self._empty:
            return value
        errors = []
        for validator in self._validators:
            try:
                validator(value)
            except ValidationError as exc:
                if hasattr(exc, "code") and exc.code in self.field.error_messages:
                    exc.message = self.field.error_messages[exc.code]
                errors.extend(exc.error_list)
        if errors:
            raise ValidationError(errors)
        return value


_PLANS: dict[type[models.Model], list[_FieldPlan]] = {}


def _plans(model: type[models.Model]) -> list[_FieldPlan]:
    plans = _PLANS.get(model)
    if plans is None:
        plans = _PLANS[model] = [_FieldPlan(field) for field in model._meta.concrete_fields]
    return plans


#: The JSON types a field accepts, by the field's internal type. Django's `to_python` coerces
#: almost anything (`str({"a": 1})`, `int(1.9)`, `int(True)`); an event whose value has the wrong
#: JSON type is malformed, and storing a coerced value would apply it wrongly.
_STRING = (str,)
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(
        ("CharField", "TextField", "SlugField", "EmailField", "URLField", "UUIDField",
         "GenericIPAddressField", "FilePathField", "FileField", "ImageField"),
        _STRING,
    ),
    **dict.fromkeys(("DateTimeField", "DateField", "TimeField", "DurationField"), _STRING),
    **dict.fromkeys(
        ("AutoField", "BigAutoField", "SmallAutoField", "IntegerField", "BigIntegerField",
         "SmallIntegerField", "PositiveIntegerField", "PositiveBigIntegerField",
         "PositiveSmallIntegerField", "ForeignKey", "OneToOneField"),
        (int,),
    ),
    "BooleanField": (bool,),
    "DecimalField": (str, int, float),
    "FloatField": (int, float),
}  # fmt: skip
_JSON_NAMES = {str: "a string", int: "an integer", bool: "a boolean", float: "a number"}


def _json_type_error(field: models.Field, value: Any) -> str | None:
    """Why `value`, as it came in the JSON, cannot be this field's value; None when it can."""
    if value is None:
        return None  # null-ness is the field's own validation
    accepted = _JSON_TYPES.get(field.get_internal_type())
    if accepted is None:
        return None  # JSONField and the like take any JSON
    # True is an int in Python, not in JSON.
    if isinstance(value, accepted) and (bool in accepted or not isinstance(value, bool)):
        return None
    expected = " or ".join(_JSON_NAMES[t] for t in accepted)
    return f"expected {expected}, got JSON {_json_name(value)} {str(value)[:50]!r}"


def _json_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", dict: "object", list: "array"}.get(type(value), type(value).__name__)


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


def apply_changes(changes: list[Change]) -> list[str]:
    """Apply validated changes in the current transaction; an outcome per change, in order."""
    outcomes: list[str | None] = [None] * len(changes)
    by_model: dict[type[models.Model], list[int]] = {}
    for index, change in enumerate(changes):
        by_model.setdefault(change.model, []).append(index)
    for model, indexes in by_model.items():
        for index, outcome in zip(
            indexes, _apply_model(model, [changes[i] for i in indexes]), strict=True
        ):
            outcomes[index] = outcome
    return outcomes  # type: ignore[return-value]


@dataclass
class _RowState:
    row: int | None  # revision of the replica row, None when there is none
    tomb: int | None  # revision of the tombstone, None when there is none


def _apply_model(model: type[models.Model], changes: list[Change]) -> list[str]:
    alias = database_of(model)
    manager = model._default_manager.db_manager(alias)
    pks = {change.pk for change in changes}
    _lock_rows(model, pks)
    rows = dict(manager.filter(pk__in=pks).values_list("pk", "cqrs_revision"))
    tombs = {
        pk: rev
        for pk, rev in Tombstone.objects.using(alias)
        .filter(cqrs_id=model.CQRS_ID, instance_pk__in=[str(pk) for pk in pks])
        .values_list("instance_pk", "cqrs_revision")
    }
    state = {pk: _RowState(rows.get(pk), tombs.get(str(pk))) for pk in pks}
    writes: dict[Any, Change] = {}  # the change that decides each row's final state
    outcomes = []
    for change in changes:
        current = state[change.pk]
        outcome = _decide(change, current)
        if outcome == APPLIED:
            writes[change.pk] = change
            if change.values is None:
                current.row, current.tomb = None, change.revision
            else:
                current.row, current.tomb = change.revision, None
        outcomes.append(outcome)
    had_tombstone = {pk for pk in pks if str(pk) in tombs}
    if hooks_of(model):
        applied = [c for c, o in zip(changes, outcomes, strict=True) if o == APPLIED]
        _write_through_hooks(model, applied, had_tombstone, alias)
    else:
        _write(model, writes, had_tombstone, alias)
    if writes:
        last = changes[max(i for i, o in enumerate(outcomes) if o == APPLIED)]
        _record_last(model, last, alias)
    return outcomes


def _write_through_hooks(
    model: type[models.Model], applied: list[Change], had_tombstone: set, alias: str
) -> None:
    """Every applied change in order, through the model's own `cqrs_save` / `cqrs_delete`."""
    from django_tools.replica.managers import applying

    buried = set(had_tombstone)
    for change in applied:
        event = change.event
        with applying(model):
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


def _decide(change: Change, current: _RowState) -> str:
    revision = change.revision
    if change.values is None:  # delete
        if current.tomb is not None and current.tomb >= revision:
            return DUPLICATE
        if current.row is not None and current.row >= revision:
            return STALE
        return APPLIED
    if current.tomb is not None and current.tomb >= revision:
        return DELETED
    if current.row is not None:
        if current.row > revision:
            return STALE
        if current.row == revision and not change.event.is_sync:
            return DUPLICATE
    return APPLIED


def _write(
    model: type[models.Model], writes: dict[Any, Change], had_tombstone: set, alias: str
) -> None:
    saves = [c for c in writes.values() if c.values is not None]
    deletes = [c for c in writes.values() if c.values is None]
    if saves:
        _upsert(model, [c.values for c in saves], alias)
        revived = [str(c.pk) for c in saves if c.pk in had_tombstone]
        if revived:
            Tombstone.objects.using(alias).filter(
                cqrs_id=model.CQRS_ID, instance_pk__in=revived
            ).delete()
    if deletes:
        model._default_manager.db_manager(alias).filter(pk__in=[c.pk for c in deletes]).delete()
        _bury(model, deletes, alias)


def _upsert(model: type[models.Model], rows: list[dict[str, Any]], alias: str) -> None:
    """INSERT … ON CONFLICT (pk) DO UPDATE for all rows in one executemany (SQLite and
    PostgreSQL): what bulk_create(update_conflicts=True) does, without compiling the SQL
    again for every batch. Safe because the caller holds the rows' locks."""
    connection = connections[alias]
    fields = [(field.attname, field.get_db_prep_value) for field in model._meta.concrete_fields]
    sql = _upsert_sql(model, connection)
    # The values come out of the fields' clean(): already Python values of the right type, so
    # only the database adaptation is left (`prepared=True` skips another to_python).
    params = [
        [prep(row[attname], connection, prepared=True) for attname, prep in fields] for row in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


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


def _record_last(model: type[models.Model], change: Change, alias: str) -> None:
    updated = change.updated
    fields = {
        "instance_pk": str(change.pk),
        "revision": change.revision,
        "signal_type": change.event.signal_type,
        "master_updated_at": updated,
        "applied_at": timezone.now(),
        "correlation_id": str(change.event.correlation_id or "")[:128],
    }
    state = ReplicaState.objects.using(alias).filter(cqrs_id=model.CQRS_ID)
    if not state.update(version=F("version") + 1, **fields):
        ReplicaState.objects.using(alias).create(cqrs_id=model.CQRS_ID, version=1, **fields)


def _lock_rows(model: type[models.Model], pks: set) -> None:
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
