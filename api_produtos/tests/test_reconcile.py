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
