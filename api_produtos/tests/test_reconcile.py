"""Reconciliation (django_tools.outbox.reconcile) against a replica reader, and its memory."""

import heapq
import time
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest
from django.db import connection

from django_tools.checksum import row_checksum
from django_tools.outbox.models import OutboxEvent
from django_tools.outbox.reconcile import reconcile
from produto.models import Produto

pytestmark = pytest.mark.django_db

FIELDS = [
    "ativo",
    "atualizado_em",
    "cqrs_revision",
    "criado_em",
    "descricao",
    "estoque",
    "nome",
    "preco",
    "sku",
]  # what api_feed compares (its fields but the key and cqrs_updated)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def values(pk: int, revision: int = 0) -> dict:
    return {"ativo": True, "atualizado_em": T0, "cqrs_revision": revision, "criado_em": T0,
            "descricao": "", "estoque": pk % 7, "nome": f"Produto {pk}",
            "preco": Decimal(pk % 100), "sku": f"SKU-{pk}"}  # fmt: skip


def insert_master(pks) -> None:
    """Rows straight into the master's table (no events): a master that already replicated them."""
    with connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO produto_produto (id, sku, nome, descricao, preco, estoque, ativo, "
            "criado_em, atualizado_em, cqrs_revision, cqrs_updated) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                [pk, v["sku"], v["nome"], "", str(v["preco"]), v["estoque"], True,
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
    Produto.objects.filter(pk=5).update(cqrs_revision=3)  # the replica missed revisions 1..3
    replica = FakeReplica(
        range(1, 11),
        overrides={
            2: None,  # deleted on the replica
            7: lambda pk: [pk, 0, "corrupted"],  # same revision, other content
            9: lambda pk: [pk, 4, "ahead"],  # newer than the master
        },
        extra=[(42, 1)],  # the master never had it
    )
    report = reconcile(Produto, replica, chunk=3)
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
        ("SYNC", "2", "cqrs.test_replica.produto"),
        ("SYNC", "5", "cqrs.test_replica.produto"),
        ("SYNC", "7", "cqrs.test_replica.produto"),
        ("DELETE", "42", "cqrs.test_replica.produto"),
    }
    assert events[("SYNC", "5", "cqrs.test_replica.produto")]["instance_data"]["cqrs_revision"] == 3
    assert (
        events[("DELETE", "42", "cqrs.test_replica.produto")]["instance_data"]["cqrs_revision"] == 2
    )


def test_a_clean_replica_needs_nothing_and_a_dry_run_sends_nothing():
    insert_master(range(1, 6))
    assert reconcile(Produto, FakeReplica(range(1, 6))).drifted == 0
    report = reconcile(Produto, FakeReplica(range(1, 4)), dry_run=True)
    assert report.missing.count == 2 and report.repairs_sent == 2
    assert OutboxEvent.objects.count() == 0


def test_the_checksum_matches_what_the_master_serializes():
    produto = Produto.objects.create(sku="A", nome="B", preco=Decimal("19.9"), criado_em=T0)
    stored = Produto.objects.filter(pk=produto.pk).values(*FIELDS).get()
    data = orjson.loads(OutboxEvent.objects.get().body)["instance_data"]
    from django.utils.dateparse import parse_datetime

    as_replica_sees_it = {
        **data,
        "preco": Decimal(data["preco"]),
        "criado_em": parse_datetime(data["criado_em"]),
        "atualizado_em": parse_datetime(data["atualizado_em"]),
    }
    assert row_checksum(stored, FIELDS) == row_checksum(as_replica_sees_it, FIELDS)


def _rss_kib(field: str) -> int:
    for line in open("/proc/self/status"):  # noqa: SIM115
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def test_memory_stays_bounded_on_100000_products():
    """Peak resident memory of this process, reset right before (Linux's clear_refs), grows by
    less than the bound while 100,000 products are compared: rows are read a chunk at a time,
    never the whole table (which alone would be ~100 MiB of row dicts)."""
    insert_master(range(1, 100_001))
    replica = FakeReplica(range(1, 100_001), overrides={50_000: None})
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # peak RSS := current RSS
    before = _rss_kib("VmRSS")
    started = time.monotonic()
    report = reconcile(Produto, replica, chunk=1000)
    seconds = time.monotonic() - started
    growth_mib = (_rss_kib("VmHWM") - before) / 1024
    assert report.master_rows == 100_000 and report.missing.sample == [50_000]
    print(
        f"\nreconciliation of 100,000 products: {seconds:.1f}s, "
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


def test_a_product_created_and_replicated_between_the_two_reads_is_never_deleted():
    """The master's page was read before the replica's: a product created and replicated in
    between looked "extra" and got a DELETE one revision above the replica's, which then
    tombstoned a live product."""
    insert_master(range(1, 4))
    # Pages of 2: the master's first page (1, 2) is read, then product 3... is there already;
    # product 4 is created and replicated before the replica's second page (3, 4) is read.
    replica = RacingReplica(range(1, 5), on_read=lambda: insert_master([4]))
    report = reconcile(Produto, replica, chunk=2)
    assert report.extra.count == 0 and report.drifted == 0
    assert not OutboxEvent.objects.filter(signal_type="DELETE").exists()


def test_a_product_the_replica_buried_by_mistake_is_revived_above_its_tombstone():
    """A SYNC at the master's revision is ignored behind a tombstone at or above it
    (`deleted_before`): reconcile reported the product missing for ever. Now the master's
    revision is raised above the tombstone, then synced."""
    insert_master(range(1, 4))
    Produto.objects.filter(pk=2).update(cqrs_revision=5)
    replica = RacingReplica(
        [1, 3],
        on_read=lambda: None,
        tombstones={2: 6},  # deleted at revision 6 on the replica
    )
    report = reconcile(Produto, replica)
    assert report.missing.sample == [2] and report.revived.sample == [2]
    assert Produto.objects.get(pk=2).cqrs_revision == 7
    (event,) = OutboxEvent.objects.all()
    body = orjson.loads(event.body)
    assert (event.signal_type, body["instance_data"]["cqrs_revision"]) == ("SYNC", 7)
    # A later save of the master applies on the replica too (8 > the tombstone's 6).
    produto = Produto.objects.get(pk=2)
    produto.nome = "after"
    produto.save()
    assert Produto.objects.get(pk=2).cqrs_revision == 8
