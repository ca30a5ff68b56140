"""apply's cached SQL (django_tools.replica.write: `read_state`, `record_last`): the same rows
and values as the ORM queries they replace, a key that is not an integer, None values, and a
bounded number of cached texts."""

import uuid
from datetime import UTC, datetime
from unittest import mock

import pytest
from dj_cqrs.constants import SignalType
from dj_replica.models import BookReplica, GadgetUuid
from django.db import DatabaseError, connections, transaction
from django.utils import timezone

from django_tools.replica import apply, write
from django_tools.replica import messages as events
from django_tools.replica.decision import RowState
from django_tools.replica.models import ReplicaState, Tombstone
from django_tools.replica.values import Change

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 1, tzinfo=UTC)
U1, U2, U3 = (uuid.UUID(int=n) for n in (1, 2, 0xABCDEF))


def gadget(pk, revision, **overrides):
    data = {"id": str(pk), "name": f"g{revision}", "cqrs_revision": revision,
            "cqrs_updated": str(T0)}  # fmt: skip
    data.update(overrides)
    return events.Event("gadget_uuid", SignalType.SAVE, str(pk), revision, data)


def gadget_delete(pk, revision):
    data = {"id": str(pk), "cqrs_revision": revision, "cqrs_updated": str(T0)}
    return events.Event("gadget_uuid", SignalType.DELETE, str(pk), revision, data)


def run(*evs):
    changes = [apply.prepare(e) for e in evs]
    with apply.transaction_for(changes):
        return apply.apply_changes(changes)


def test_a_uuid_keyed_model_reads_its_state_through_the_cached_sql():
    assert run(gadget(U1, 1, weight=5), gadget(U2, 1), gadget_delete(U2, 2)) == ["applied"] * 3
    state = write.read_state(GadgetUuid, {U1, U2, U3}, "default")
    assert write._state_plan(GadgetUuid, connections["default"]) is not None  # not the ORM's path
    assert state == {U1: RowState(1, None), U2: RowState(None, 2), U3: RowState(None, None)}
    assert all(type(pk) is uuid.UUID for pk in state)
    assert state == write._read_state_orm(GadgetUuid, {U1, U2, U3}, "default")
    # So the decisions see the row and the tombstone.
    assert run(gadget(U1, 1), gadget(U1, 0), gadget(U2, 1), gadget(U1, 3, weight=None)) == [
        "duplicate", "stale", "deleted_before", "applied",
    ]  # fmt: skip
    assert GadgetUuid.objects.values_list("pk", "cqrs_revision", "weight").get() == (U1, 3, None)


def test_the_cached_sql_reads_what_the_orm_reads(replica_row):
    for pk in (1, 2, 3):
        replica_row(pk, revision=pk)
    Tombstone.objects.create(cqrs_id="book", instance_pk="4", cqrs_revision=7, deleted_at=T0)
    Tombstone.objects.create(cqrs_id="other", instance_pk="5", cqrs_revision=9, deleted_at=T0)
    for pks in ({1}, {1, 4}, {1, 2, 3, 4, 5}, {5, 6}):
        assert write.read_state(BookReplica, pks, "default") == write._read_state_orm(
            BookReplica, pks, "default"
        )
    assert write.read_state(BookReplica, {2, 4, 5}, "default") == {
        2: RowState(2, None), 4: RowState(None, 7), 5: RowState(None, None),
    }  # fmt: skip


def change(pk, revision, *, updated=None, correlation_id=None, signal=SignalType.SAVE):
    event = events.Event("gadget_uuid", signal, str(pk), revision, {}, correlation_id)
    return Change(event, GadgetUuid, pk, {}, updated=updated)


def test_record_last_sends_none_as_null_and_counts_versions():
    with transaction.atomic():
        write.record_last(GadgetUuid, change(U1, 4, updated=T0, correlation_id="c-1"), "default")
    first = ReplicaState.objects.get(cqrs_id="gadget_uuid")
    assert (first.version, first.instance_pk, first.revision) == (1, str(U1), 4)
    assert (first.master_updated_at, first.correlation_id) == (T0, "c-1")
    before = timezone.now()
    with transaction.atomic():
        write.record_last(GadgetUuid, change(U3, 5, signal=SignalType.DELETE), "default")
    state = ReplicaState.objects.get(cqrs_id="gadget_uuid")
    assert (state.version, state.instance_pk, state.revision, state.signal_type) == (
        2, str(U3), 5, SignalType.DELETE,
    )  # fmt: skip
    assert state.master_updated_at is None  # None is a parameter: NULL, not the old value
    assert state.correlation_id == ""
    assert state.applied_at >= before
    assert state.incarnation == first.incarnation  # the row is updated, not recreated
    assert ReplicaState.objects.filter(cqrs_id="book").count() == 0  # only its own CQRS_ID


def test_the_cached_texts_are_bounded_and_large_batches_use_the_orm(replica_row):
    replica_row(1, revision=3)
    write._STATE_PLANS.pop(connections["default"], None)
    for count in range(1, 301):
        pks = set(range(1, count + 1))
        assert write.read_state(BookReplica, pks, "default")[1] == RowState(3, None)
    plan = write._state_plan(BookReplica, connections["default"])
    assert sorted(plan.texts) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    many = set(range(1, write.STATE_PKS_MAX + 2))
    with mock.patch.object(write, "_read_state_orm", wraps=write._read_state_orm) as orm:
        assert write.read_state(BookReplica, many, "default")[1] == RowState(3, None)
    orm.assert_called_once()
    assert len(plan.texts) == 10


def test_a_model_the_plan_cannot_be_built_for_stays_on_the_orm(replica_row, caplog):
    replica_row(1, revision=2)
    write._STATE_PLANS.pop(connections["default"], None)
    with mock.patch.object(write, "_StatePlan", side_effect=TypeError("no converter")):
        assert write.read_state(BookReplica, {1, 2}, "default") == {
            1: RowState(2, None), 2: RowState(None, None),
        }  # fmt: skip
    assert write._state_plan(BookReplica, connections["default"]) is None
    assert "stays on the ORM" in caplog.text
    write._STATE_PLANS.pop(connections["default"], None)


def book(data):
    return events.Event("book", SignalType.SAVE, data["id"], data["cqrs_revision"], data)


def _refuse_title(connection, table: str, title: str) -> tuple[list[str], list[str]]:
    """A trigger of the database that refuses a row with `title`: a write error the data's
    validation cannot see (create, drop)."""
    if connection.vendor == "postgresql":
        return (
            [f"CREATE FUNCTION refuse_title() RETURNS trigger AS $$ BEGIN IF NEW.title = "
             f"'{title}' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$ "
             "LANGUAGE plpgsql",
             f"CREATE TRIGGER refuse_title BEFORE INSERT OR UPDATE ON {table} "
             "FOR EACH ROW EXECUTE FUNCTION refuse_title()"],
            [f"DROP TRIGGER refuse_title ON {table}", "DROP FUNCTION refuse_title()"],
        )  # fmt: skip
    return (
        [f"CREATE TRIGGER refuse_title BEFORE INSERT ON {table} WHEN NEW.title = '{title}' "
         "BEGIN SELECT RAISE(ABORT, 'refused'); END"],
        ["DROP TRIGGER refuse_title"],
    )  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_a_write_the_database_refuses_rolls_the_batch_back_and_the_next_batch_applies(
    instance_data,
):
    """On PostgreSQL the batch runs in a pipeline, where a write's error comes back only at the
    commit: it must still fail the batch, undo all of it, and leave the connection usable."""
    connection = connections["default"]
    create, drop = _refuse_title(connection, BookReplica._meta.db_table, "REFUSED")
    with connection.cursor() as cursor:
        for statement in create:
            cursor.execute(statement)
    try:
        batch = [apply.prepare(book(instance_data(1))),
                 apply.prepare(book(instance_data(2, title="REFUSED")))]  # fmt: skip
        with pytest.raises(DatabaseError), write.transaction_for(batch):
            apply.apply_changes(batch)
        assert not BookReplica.objects.exists()
        assert not ReplicaState.objects.exists()

        again = [apply.prepare(book(instance_data(1)))]
        with write.transaction_for(again):
            assert apply.apply_changes(again) == ["applied"]
        assert list(BookReplica.objects.values_list("pk", flat=True)) == [1]
        assert ReplicaState.objects.get(cqrs_id="book").version == 1
    finally:
        with connection.cursor() as cursor:
            for statement in drop:
                cursor.execute(statement)
