"""Reconciliation (django_tools.outbox.reconcile) against a replica reader, and its memory."""

import heapq
import time
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest
from dj_master.models import Book
from dj_replica.models import BookReplica
from django.db import connection

from django_tools.checksum import row_checksum
from django_tools.outbox.models import OutboxEvent
from django_tools.outbox.reconcile import HttpReplicaReader, reconcile
from django_tools.replica.rows import compared_fields

pytestmark = pytest.mark.django_db

#: What the replica compares: its fields but the key and cqrs_updated.
FIELDS = compared_fields(BookReplica)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_replica_compares_every_replicated_field():
    assert FIELDS == [
        "copies",
        "cqrs_revision",
        "created_at",
        "in_print",
        "isbn",
        "price",
        "summary",
        "title",
        "updated_at",
    ]


def values(pk: int, revision: int = 0) -> dict:
    return {"copies": pk % 7, "cqrs_revision": revision, "created_at": T0, "in_print": True,
            "isbn": f"ISBN-{pk}", "price": Decimal(pk % 100), "summary": "",
            "title": f"Book {pk}", "updated_at": T0}  # fmt: skip


def insert_master(pks) -> None:
    """Rows straight into the master's table (no events): a master that already replicated them."""
    with connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO dj_master_book (id, isbn, title, summary, price, copies, in_print, "
            "created_at, updated_at, cqrs_revision, cqrs_updated) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                [pk, v["isbn"], v["title"], "", str(v["price"]), v["copies"], True,
                 connection.ops.adapt_datetimefield_value(T0),
                 connection.ops.adapt_datetimefield_value(T0), 0,
                 connection.ops.adapt_datetimefield_value(T0)]
                for pk in pks
                for v in [values(pk)]
            ],
        )  # fmt: skip


class FakeReplica:
    """A replica that computes its rows on the fly (so it holds none in memory)."""

    queue = "test_replica"

    def __init__(self, pks, overrides=None, extra=()):
        self.pks, self.overrides, self.extra = pks, overrides or {}, sorted(extra)

    def rows(self):
        regular = (pk for pk in self.pks if pk not in self.overrides or self.overrides[pk])
        extra = ((pk, "extra", revision) for pk, revision in self.extra)
        for pk, *rest in heapq.merge(((pk,) for pk in regular), extra):
            if rest:
                yield [pk, rest[1], "x"]
            elif pk in self.overrides:
                yield self.overrides[pk](pk)
            else:
                yield [pk, 0, row_checksum(values(pk), FIELDS)]

    def tombstones(self, cqrs_id, pks):
        return {}

    def pages(self, cqrs_id, chunk):
        page = []
        for row in self.rows():
            page.append(row)
            if len(page) == chunk:
                yield FIELDS, page
                page = []
        yield FIELDS, page


def test_every_kind_of_drift_is_found_and_repaired_through_the_outbox():
    insert_master(range(1, 11))
    Book.objects.filter(pk=5).update(cqrs_revision=3)  # the replica missed revisions 1..3
    replica = FakeReplica(
        range(1, 11),
        overrides={
            2: None,  # deleted on the replica
            7: lambda pk: [pk, 0, "corrupted"],  # same revision, other content
            9: lambda pk: [pk, 4, "ahead"],  # newer than the master
        },
        extra=[(42, 1)],  # the master never had it
    )
    report = reconcile(Book, replica, chunk=3)
    assert (report.master_rows, report.replica_rows) == (10, 10)
    assert report.missing.sample == [2] and report.stale.sample == [5]
    assert report.corrupted.sample == [7] and report.extra.sample == [42]
    assert report.ahead.sample == [9]
    assert report.repairs_sent == 4
    events = {
        (e.signal_type, e.instance_pk, e.routing_key): orjson.loads(e.body)
        for e in OutboxEvent.objects.all()
    }
    assert set(events) == {
        ("SYNC", "2", "cqrs.test_replica.book"),
        ("SYNC", "5", "cqrs.test_replica.book"),
        ("SYNC", "7", "cqrs.test_replica.book"),
        ("DELETE", "42", "cqrs.test_replica.book"),
    }
    assert events[("SYNC", "5", "cqrs.test_replica.book")]["instance_data"]["cqrs_revision"] == 3
    assert events[("DELETE", "42", "cqrs.test_replica.book")]["instance_data"]["cqrs_revision"] == 2


def test_a_clean_replica_needs_nothing_and_a_dry_run_sends_nothing():
    insert_master(range(1, 6))
    assert reconcile(Book, FakeReplica(range(1, 6))).drifted == 0
    report = reconcile(Book, FakeReplica(range(1, 4)), dry_run=True)
    assert report.missing.count == 2 and report.repairs_sent == 2
    assert OutboxEvent.objects.count() == 0


def test_the_checksum_matches_what_the_master_serializes():
    book = Book.objects.create(isbn="A", title="B", price=Decimal("19.9"), created_at=T0)
    stored = Book.objects.filter(pk=book.pk).values(*FIELDS).get()
    data = orjson.loads(OutboxEvent.objects.get().body)["instance_data"]
    from django.utils.dateparse import parse_datetime

    as_replica_sees_it = {
        **data,
        "price": Decimal(data["price"]),
        "created_at": parse_datetime(data["created_at"]),
        "updated_at": parse_datetime(data["updated_at"]),
    }
    assert row_checksum(stored, FIELDS) == row_checksum(as_replica_sees_it, FIELDS)


def _rss_kib(field: str) -> int:
    for line in open("/proc/self/status"):  # noqa: SIM115
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def test_memory_stays_bounded_on_100000_rows():
    """Peak resident memory of this process, reset right before (Linux's clear_refs), grows by
    less than the bound while 100,000 rows are compared: rows are read a chunk at a time,
    never the whole table (which alone would be ~100 MiB of row dicts)."""
    insert_master(range(1, 100_001))
    replica = FakeReplica(range(1, 100_001), overrides={50_000: None})
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # peak RSS := current RSS
    before = _rss_kib("VmRSS")
    started = time.monotonic()
    report = reconcile(Book, replica, chunk=1000)
    seconds = time.monotonic() - started
    growth_mib = (_rss_kib("VmHWM") - before) / 1024
    assert report.master_rows == 100_000 and report.missing.sample == [50_000]
    print(
        f"\nreconciliation of 100,000 rows: {seconds:.1f}s, "
        f"peak resident memory +{growth_mib:.1f} MiB"
    )
    assert growth_mib < 32  # the bound (with 1000-row chunks)


class RacingReplica(FakeReplica):
    """A replica whose page is read after the master's: `on_read` runs (on the master) between
    the master's read of its page and the replica's."""

    def __init__(self, pks, on_read, tombstones=None, **kwargs):
        super().__init__(pks, **kwargs)
        self.on_read = on_read
        self.buried = tombstones or {}

    def tombstones(self, cqrs_id, pks):
        return {str(pk): rev for pk, rev in self.buried.items() if pk in pks}

    def pages(self, cqrs_id, chunk):
        pages = super().pages(cqrs_id, chunk)
        first = next(pages)
        yield first
        self.on_read()
        yield from pages


def test_a_row_created_and_replicated_between_the_two_reads_is_never_deleted():
    """The master's page was read before the replica's: a row created and replicated in
    between looked "extra" and got a DELETE one revision above the replica's, which then
    tombstoned a live row."""
    insert_master(range(1, 4))
    # Pages of 2: the master's first page (1, 2) is read, then row 3... is there already;
    # row 4 is created and replicated before the replica's second page (3, 4) is read.
    replica = RacingReplica(range(1, 5), on_read=lambda: insert_master([4]))
    report = reconcile(Book, replica, chunk=2)
    assert report.extra.count == 0 and report.drifted == 0
    assert not OutboxEvent.objects.filter(signal_type="DELETE").exists()


def test_a_row_the_replica_buried_by_mistake_is_revived_above_its_tombstone():
    """A SYNC at the master's revision is ignored behind a tombstone at or above it
    (`deleted_before`): reconcile reported the row missing for ever. Now the master's
    revision is raised above the tombstone, then synced."""
    insert_master(range(1, 4))
    Book.objects.filter(pk=2).update(cqrs_revision=5)
    replica = RacingReplica(
        [1, 3],
        on_read=lambda: None,
        tombstones={2: 6},  # deleted at revision 6 on the replica
    )
    report = reconcile(Book, replica)
    assert report.missing.sample == [2] and report.revived.sample == [2]
    assert Book.objects.get(pk=2).cqrs_revision == 7
    (event,) = OutboxEvent.objects.all()
    body = orjson.loads(event.body)
    assert (event.signal_type, body["instance_data"]["cqrs_revision"]) == ("SYNC", 7)
    # A later save of the master applies on the replica too (8 > the tombstone's 6).
    book = Book.objects.get(pk=2)
    book.title = "after"
    book.save()
    assert Book.objects.get(pk=2).cqrs_revision == 8


@pytest.mark.django_db(transaction=True)
def test_through_the_replica_api_every_drift_is_found_and_repaired(live_server, replica_row):
    """The master reads the replica as it does in production, through the replica's API
    (`HttpReplicaReader`: status, rows and tombstones, always naming the CQRS_ID)."""
    from django.utils import timezone

    from django_tools.replica.models import Tombstone

    insert_master(range(1, 7))
    Book.objects.filter(pk=4).update(cqrs_revision=2)
    for pk in (1, 3, 4, 5):
        replica_row(pk, **{**values(pk), "price": str(values(pk)["price"]), "updated_at": T0})
    BookReplica.objects.filter(pk=3).update(title="tampered")  # same revision, other content
    replica_row(9, revision=1)  # the master never had it
    Tombstone.objects.create(  # 6: deleted at revision 3 on the replica, live on the master
        cqrs_id="book", instance_pk="6", cqrs_revision=3, deleted_at=timezone.now()
    )
    reader = HttpReplicaReader(live_server.url)
    report = reconcile(Book, reader, chunk=2)
    assert (report.master_rows, report.replica_rows) == (6, 5)
    assert report.missing.sample == [2, 6] and report.revived.sample == [6]
    assert report.corrupted.sample == [3] and report.stale.sample == [4]
    assert report.extra.sample == [9] and report.ahead.count == 0
    queue = f"cqrs.{reader.queue}.book"
    sent = {(e.signal_type, e.instance_pk, e.routing_key) for e in OutboxEvent.objects.all()}
    assert sent == {
        ("SYNC", "2", queue),
        ("SYNC", "3", queue),
        ("SYNC", "4", queue),
        ("SYNC", "6", queue),
        ("DELETE", "9", queue),
    }
    assert Book.objects.get(pk=6).cqrs_revision == 4  # above the tombstone
