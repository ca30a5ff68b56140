"""A replica model that a database router sends to another database (`dj_replica.BookElsewhere`,
database `elsewhere`): the consumer's transaction, the row locks, the tombstones and the replica
state are all on that database. The consumer opened its transaction on `default` while apply
wrote through `router.db_for_write`: the writes on the other database autocommitted one by one
(a failure halfway left half a change) and PostgreSQL released each row lock at once."""

import threading
from unittest import mock

import pytest
from dj_cqrs.constants import SignalType
from dj_replica.models import BookElsewhere
from django.db import connections

from django_tools.replica import apply
from django_tools.replica.consumer import Consumer, Delivery
from django_tools.replica.messages import Event
from django_tools.replica.models import ReplicaState, Tombstone
from django_tools.testing import wait_until

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "elsewhere"])

UPDATED = "2026-01-01 00:00:00+00:00"


def data(pk: int, revision: int, title: str = "Dune") -> dict:
    return {"id": pk, "title": title, "cqrs_revision": revision, "cqrs_updated": UPDATED}


def change(signal_type: str, payload: dict) -> apply.Change:
    return apply.prepare(
        Event("book_elsewhere", signal_type, payload["id"], payload["cqrs_revision"], payload)
    )


def apply_as_the_consumer(*changes: apply.Change) -> None:
    """The consumer's own transaction around apply (`Consumer._apply_in_transaction`)."""
    consumer = Consumer(topology=None, url="amqp://unused")
    consumer._apply_in_transaction([(Delivery(n, "", None, b""), c) for n, c in enumerate(changes)])


def test_the_router_sends_the_model_elsewhere():
    assert apply.database_of(BookElsewhere) == "elsewhere"


def test_through_the_broker_rows_tombstones_and_state_are_in_the_models_database(
    consumers, publish, event_payload
):
    consumers.start()
    publish(event_payload("SAVE", data(1, 0), cqrs_id="book_elsewhere"), "book_elsewhere")
    publish(event_payload("SAVE", data(2, 0), cqrs_id="book_elsewhere"), "book_elsewhere")
    delete = {"id": 2, "cqrs_revision": 1, "cqrs_updated": UPDATED}
    publish(event_payload("DELETE", delete, cqrs_id="book_elsewhere"), "book_elsewhere")
    wait_until(
        lambda: Tombstone.objects.using("elsewhere").filter(cqrs_id="book_elsewhere").exists(),
        what="the delete's tombstone in the model's database",
    )
    assert list(BookElsewhere.objects.values_list("pk", flat=True)) == [1]
    state = ReplicaState.objects.using("elsewhere").get(cqrs_id="book_elsewhere")
    assert state.version >= 1 and state.instance_pk in ("1", "2")
    # Nothing of it on the default database.
    assert not Tombstone.objects.using("default").filter(cqrs_id="book_elsewhere").exists()
    assert not ReplicaState.objects.using("default").filter(cqrs_id="book_elsewhere").exists()
    # A stale save of the deleted row is refused by that tombstone.
    assert apply_changes_outcome(change(SignalType.SAVE, data(2, 0))) == "deleted_before"


def apply_changes_outcome(one: apply.Change) -> str:
    with apply.transaction_for([one]):
        (outcome,) = apply.apply_changes([one])
    return outcome


def test_a_failure_after_the_write_rolls_the_whole_change_back():
    def failing(*args, **kwargs):
        raise RuntimeError("crash after the row was written")

    with mock.patch.object(apply, "record_last", failing), pytest.raises(RuntimeError):
        apply_as_the_consumer(change(SignalType.SAVE, data(5, 0)))
    assert not BookElsewhere.objects.filter(pk=5).exists()

    apply_as_the_consumer(change(SignalType.SAVE, data(5, 0)))
    delete = change(SignalType.DELETE, {"id": 5, "cqrs_revision": 1, "cqrs_updated": UPDATED})
    with mock.patch.object(apply, "record_last", failing), pytest.raises(RuntimeError):
        apply_as_the_consumer(delete)
    # Not deleted without its tombstone (a late save would have brought it back).
    assert BookElsewhere.objects.filter(pk=5).exists()
    assert not Tombstone.objects.using("elsewhere").filter(cqrs_id="book_elsewhere").exists()


def test_the_row_lock_is_held_until_the_transaction_ends():
    """PostgreSQL: the advisory lock of each row (`pg_advisory_xact_lock`) on the model's
    database, for the whole transaction; in autocommit it was released after its statement."""
    if connections["elsewhere"].vendor != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's; SQLite's BEGIN IMMEDIATE locks the file")
    inside, release = threading.Event(), threading.Event()
    real_record = apply.record_last
    errors: list[BaseException] = []

    def paused(*args, **kwargs):
        inside.set()
        release.wait(10)
        return real_record(*args, **kwargs)

    def worker():
        try:
            apply_as_the_consumer(change(SignalType.SAVE, data(7, 0)))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    with mock.patch.object(apply, "record_last", paused):
        thread = threading.Thread(target=worker)
        thread.start()
        try:
            assert inside.wait(10), "apply never reached the end of its batch"
            with connections["elsewhere"].cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                    "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()"
                )
                (held,) = cursor.fetchone()
        finally:
            release.set()
            thread.join(10)
    assert not errors, errors
    assert held == 1
    assert BookElsewhere.objects.filter(pk=7).exists()
