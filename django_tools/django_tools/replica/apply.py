"""Events → rows: the one place where a replicated event changes the replica's database.

`prepare(event)` validates an event against its replica model (no database) and gives a
`Change`; `apply_changes(changes)` applies a batch inside the caller's transaction, opened with
`transaction_for(changes)`. The consumer acknowledges the messages only after that transaction
committed. Per model, a batch is: lock the rows' keys (PostgreSQL advisory locks; SQLite's
`BEGIN IMMEDIATE` already serialises writers), read their revisions and tombstones, decide each
change, write, record the replica's state — so the outcome does not depend on delivery order,
duplicates or how many workers apply concurrently.

The steps live in modules named for them, none of which imports this one or the manager:

- `values`: a message's values against the model's fields (`Change`, `clean_values`);
- `hooks`: which of django-cqrs's replica hooks a model uses (`hooks_of`), `HookFailed`, and
  the flag its `cqrs` manager reads while apply calls those hooks;
- `decision`: revisions and tombstones (`decide`, the outcomes `APPLIED`, `DUPLICATE`, `STALE`,
  `DELETED`);
- `write`: locks, bulk writes or writes through the hooks, tombstones, the replica's state.

`managers.ConvergentReplicaManager` routes django-cqrs's own entry points here; it depends on
this core, never the other way.
"""

from __future__ import annotations

from dj_cqrs.registries import ReplicaRegistry
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, models

from django_tools.replica.decision import (
    APPLIED,
    DELETED,
    DUPLICATE,
    STALE,
    decide_batch,
)
from django_tools.replica.hooks import HookFailed, forget_hooks, hooks_of, is_convergent
from django_tools.replica.messages import Event, InvalidData, UnknownCqrsId
from django_tools.replica.values import Change, clean_pk, clean_values, updated
from django_tools.replica.write import (
    database_of,
    lock_rows,
    read_state,
    record_last,
    row_params,
    transaction_for,
    write_in_bulk,
    write_through_hooks,
)

__all__ = [
    "APPLIED",
    "DELETED",
    "DUPLICATE",
    "STALE",
    "Change",
    "HookFailed",
    "apply_changes",
    "database_of",
    "forget_hooks",
    "hooks_of",
    "prepare",
    "replica_model",
    "transaction_for",
]


def replica_model(cqrs_id: str) -> type[models.Model]:
    model = ReplicaRegistry.models.get(cqrs_id)
    if model is None:
        raise UnknownCqrsId(f"no replica model has CQRS_ID {cqrs_id!r}")
    if not is_convergent(model):
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
        pk = clean_pk(pk_field, raw_pk, missing=f"a delete without {pk_field.name}")
        return Change(event, model, pk, None)
    if hooks_of(model):
        return _prepare_for_hooks(model, event)
    values = clean_values(model, event.data, complete=True)
    return Change(
        event, model, values[pk_field.attname], values, updated=updated(event.data, values),
        params=row_params(model, values, connections[database_of(model)]),
    )  # fmt: skip


def _prepare_for_hooks(model: type[models.Model], event: Event) -> Change:
    """A save of a model written through its hooks: the data is mapped as django-cqrs maps it
    (`CQRS_MAPPING`), and checked against the model's fields unless the model serializes
    itself (`CQRS_CUSTOM_SERIALIZATION`); the hooks get the mapped data."""
    pk_field = model._meta.pk
    mapped = model.cqrs._map_save_data(event.data)
    if not mapped:
        raise InvalidData(
            "the data does not fit the replica model's CQRS_MAPPING, key or required fields"
        )
    if not model.CQRS_CUSTOM_SERIALIZATION:
        clean_values(model, mapped, complete=False)
    pk = clean_pk(pk_field, mapped[pk_field.name])
    return Change(event, model, pk, mapped, updated=updated(event.data, mapped))


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


def _apply_model(model: type[models.Model], changes: list[Change]) -> list[str]:
    alias = database_of(model)
    pks = {change.pk for change in changes}
    lock_rows(model, pks)
    state = read_state(model, pks, alias)
    had_tombstone = {pk for pk, current in state.items() if current.tomb is not None}
    outcomes, writes = decide_batch(changes, state)
    if hooks_of(model):
        applied = [c for c, o in zip(changes, outcomes, strict=True) if o == APPLIED]
        write_through_hooks(model, applied, had_tombstone, alias)
    else:
        write_in_bulk(model, writes, had_tombstone, alias)
    if writes:
        last = changes[max(i for i, o in enumerate(outcomes) if o == APPLIED)]
        record_last(model, last, alias)
    return outcomes
