"""Every change of a master model writes its event to the outbox in the same transaction (no
broker involved)."""

import io
from datetime import timedelta
from decimal import Decimal

import orjson
import pytest
from dj_master.models import Book
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.utils import timezone

from django_tools.outbox.models import OutboxEvent
from django_tools.outbox.selectors import outbox_backlog
from django_tools.outbox.services import prune_published
from django_tools.testing import STOCK_PAYLOAD_KEYS

pytestmark = pytest.mark.django_db


def events() -> list[dict]:
    return [orjson.loads(e.body) for e in OutboxEvent.objects.order_by("id")]


def make(isbn="B-1", **kw) -> Book:
    return Book.objects.create(isbn=isbn, title="Dune", price=Decimal("7.5"), **kw)


@transaction.atomic
def update(pk: int, **changes) -> Book:
    book = Book.objects.select_for_update().get(pk=pk)
    for field, value in changes.items():
        setattr(book, field, value)
    book.save()
    return book


@transaction.atomic
def delete(pk: int) -> None:
    Book.objects.select_for_update().get(pk=pk).delete()


def test_create_update_delete_each_leave_one_stock_payload():
    book = make(copies=2)
    update(book.pk, price=Decimal("8"))
    delete(book.pk)
    save, updated, deleted = events()
    assert set(save) == STOCK_PAYLOAD_KEYS
    assert (save["signal_type"], save["cqrs_id"], save["instance_pk"]) == ("SAVE", "book", book.pk)
    data = save["instance_data"]
    assert (data["isbn"], data["price"], data["copies"], data["cqrs_revision"]) == (
        "B-1",
        "7.50",
        2,
        0,
    )
    assert (updated["instance_data"]["price"], updated["instance_data"]["cqrs_revision"]) == (
        "8.00",
        1,
    )
    assert (deleted["signal_type"], deleted["instance_data"]) == (
        "DELETE",
        {
            "id": book.pk,
            "cqrs_revision": 2,
            "cqrs_updated": deleted["instance_data"]["cqrs_updated"],
        },
    )
    rows = list(
        OutboxEvent.objects.order_by("id").values_list("routing_key", "revision", "published_at")
    )
    assert rows == [("book", 0, None), ("book", 1, None), ("book", 2, None)]


def test_a_rolled_back_transaction_leaves_no_event():
    with pytest.raises(RuntimeError), transaction.atomic():
        make(isbn="GONE")
        raise RuntimeError("abort")
    assert OutboxEvent.objects.count() == 0
    make(isbn="KEPT")
    assert [e["instance_data"]["isbn"] for e in events()] == ["KEPT"]


def test_a_failed_write_leaves_no_event():
    make(isbn="A")
    # As with Django's own save(), the caller's atomic() isolates a failure inside its
    # transaction (the save joins the transaction, it opens no savepoint of its own).
    with pytest.raises(IntegrityError), transaction.atomic():  # the unique isbn
        make(isbn="A")
    assert OutboxEvent.objects.count() == 1


def test_several_saves_in_one_transaction_are_distinct_revisions():
    with transaction.atomic():
        book = make()
        book.title = "Dune Messiah"
        book.save()
        book.copies = 9
        book.save()
    revisions = [
        (e["instance_data"]["cqrs_revision"], e["instance_data"]["title"]) for e in events()
    ]
    assert revisions == [(0, "Dune"), (1, "Dune Messiah"), (2, "Dune Messiah")]
    assert events()[-1]["instance_data"]["copies"] == 9
    assert Book.objects.get().cqrs_revision == 2


def test_a_plain_save_outside_any_transaction_still_commits_with_its_event():
    book = Book(isbn="RAW", title="x", price=Decimal("1"))
    book.save()  # TransactionalWritesMixin opens the transaction itself
    book.delete()
    assert [e["signal_type"] for e in events()] == ["SAVE", "DELETE"]


def test_bulk_operations_leave_an_event_per_row():
    created = Book.cqrs.bulk_create(
        [Book(isbn=f"B-{n}", title=f"n{n}", price=Decimal(n)) for n in range(3)]
    )
    Book.cqrs.bulk_update(Book.objects.filter(isbn__in=["B-0", "B-1"]), in_print=False)
    Book.objects.filter(isbn="B-2").delete()
    kinds = [
        (e["signal_type"], e["instance_data"].get("isbn"), e["instance_data"]["cqrs_revision"])
        for e in events()
    ]
    assert kinds == [
        ("SAVE", "B-0", 0),
        ("SAVE", "B-1", 0),
        ("SAVE", "B-2", 0),
        ("SAVE", "B-0", 1),
        ("SAVE", "B-1", 1),
        ("DELETE", None, 1),
    ]
    assert all(b.pk for b in created)


def test_cqrs_sync_to_one_queue_goes_through_the_outbox(django_capture_on_commit_callbacks):
    book = make()
    OutboxEvent.objects.all().delete()
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command(
            "cqrs_sync",
            "--cqrs-id",
            "book",
            "--filter",
            "{}",
            "--queue",
            "new_replica",
            stdout=out,
        )
    (event,) = OutboxEvent.objects.all()
    assert event.routing_key == "cqrs.new_replica.book"
    body = orjson.loads(event.body)
    assert (body["signal_type"], body["instance_pk"]) == ("SYNC", book.pk)


def test_writes_never_touch_the_broker(settings):
    settings.CQRS = {**settings.CQRS, "url": "amqp://admin:admin@127.0.0.1:1/"}  # nobody there
    book = make(isbn="OFF")
    update(book.pk, copies=3)
    assert list(OutboxEvent.objects.order_by("id").values_list("signal_type", "revision")) == [
        ("SAVE", 0),
        ("SAVE", 1),
    ]


def test_backlog_and_pruning():
    for n in range(3):
        make(isbn=f"S-{n}")
    backlog = outbox_backlog()
    assert backlog.count == 3 and backlog.oldest_age_seconds >= 0
    assert backlog.last_published_at is None
    long_ago = timezone.now() - timedelta(hours=5)
    OutboxEvent.objects.filter(instance_pk__in=[str(b.pk) for b in Book.objects.all()[:2]]).update(
        published_at=long_ago
    )
    assert outbox_backlog().count == 1
    assert outbox_backlog().last_published_at == long_ago
    assert prune_published(older_than=timedelta(hours=6)) == 0
    assert prune_published(older_than=timedelta(hours=1), chunk=1) == 2
    assert OutboxEvent.objects.count() == 1  # the unpublished one is never pruned


def test_the_beat_prune_task_removes_what_was_published_long_ago(settings):
    from django_tools.outbox.tasks import prune_outbox

    settings.OUTBOX_RETENTION = 3600
    make(isbn="OLD")
    make(isbn="NEW")
    OutboxEvent.objects.filter(body__contains='"OLD"').update(
        published_at=timezone.now() - timedelta(hours=2)
    )
    assert prune_outbox.apply().get() == 1
    assert [orjson.loads(e.body)["instance_data"]["isbn"] for e in OutboxEvent.objects.all()] == [
        "NEW"
    ]


@pytest.mark.django_db(transaction=True)
def test_marking_published_does_not_wait_for_the_disk_on_postgresql():
    """A lost mark only sends rows again (the replica applies by revision): on PostgreSQL the
    relay's own marking transaction commits without waiting for its WAL flush — and never a
    caller's transaction, whose other writes must stay durable."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from django_tools.outbox.services import mark_published

    for n in range(3):
        make(isbn=f"M-{n}")
    ids = list(OutboxEvent.objects.values_list("id", flat=True))
    with CaptureQueriesContext(connection) as queries:
        mark_published(ids[:2])
    lazy = [q["sql"] for q in queries.captured_queries if "synchronous_commit" in q["sql"]]
    postgres = connection.vendor == "postgresql"
    assert len(lazy) == (1 if postgres else 0), queries.captured_queries
    assert OutboxEvent.objects.filter(published_at__isnull=True).count() == 1
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        mark_published(ids[2:])
    assert not any("synchronous_commit" in q["sql"] for q in queries.captured_queries)
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()
    if postgres:  # SET LOCAL: nothing left on the session
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone()[0] == "on"
