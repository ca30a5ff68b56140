"""Reconciliation, run by the master: compare its rows with a replica's by primary key,
revision and content checksum, a chunk at a time, and repair what drifted.

- missing on the replica, older revision, or same revision with other content → a `SYNC` of the
  master's row to that replica's queue (django-cqrs's sync event; the replica applies it by
  revision, and a same-revision sync overwrites);
- on the replica but no longer on the master → a `DELETE` to that replica's queue, one revision
  above the replica's (it then keeps a tombstone);
- newer on the replica than on the master → reported, not touched (something wrote the replica
  by hand; a sync would be ignored as stale).

Repairs are events written to the outbox like any other change: they reach the replica through
the relay, in order, and nothing is written to the replica's database from here. Both sides are
walked in key order with keyset pagination, so memory stays the size of a chunk whatever the
table size (django-cqrs's own `cqrs_diff_*` commands compare revisions only and cannot see a row
corrupted at its revision, hence this).
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from dj_cqrs.constants import SignalType
from dj_cqrs.dataclasses import TransportPayload
from django.db import models, router, transaction
from django.utils import timezone

from django_tools.checksum import row_checksum
from django_tools.outbox.events import enqueue
from django_tools.outbox.signals import OutboxSignals

logger = logging.getLogger("django_tools.reconcile")

SAMPLE = 20  # ids kept per kind of drift, for the report


class ReplicaReader(Protocol):
    queue: str

    def pages(self, cqrs_id: str, chunk: int) -> Iterator[tuple[list[str], list[list]]]:
        """(compared field names, rows `[pk, revision, checksum]`) in key order."""


class ReplicaUnavailable(Exception):
    pass


class HttpReplicaReader:
    """A replica seen through its API: `/api/replication/status` for its queue,
    `/api/replication/rows` for its rows."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.queue = self._get("/api/replication/status")["queue"]["name"]

    def _get(self, path: str) -> dict:
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=self.timeout) as response:
                return json.load(response)
        except OSError as exc:
            raise ReplicaUnavailable(f"replica at {self.base_url} unreachable: {exc}") from exc

    def pages(self, cqrs_id: str, chunk: int) -> Iterator[tuple[list[str], list[list]]]:
        after = None
        while True:
            query = {"cqrs_id": cqrs_id, "limit": chunk}
            if after is not None:
                query["after"] = after
            page = self._get(f"/api/replication/rows?{urllib.parse.urlencode(query)}")
            yield page["fields"], page["rows"]
            if len(page["rows"]) < chunk:
                return
            after = page["rows"][-1][0]


@dataclass
class Drift:
    count: int = 0
    sample: list = field(default_factory=list)

    def add(self, pk: Any) -> None:
        self.count += 1
        if len(self.sample) < SAMPLE:
            self.sample.append(pk)


@dataclass
class Report:
    cqrs_id: str
    queue: str
    dry_run: bool
    master_rows: int = 0
    replica_rows: int = 0
    missing: Drift = field(default_factory=Drift)
    stale: Drift = field(default_factory=Drift)
    corrupted: Drift = field(default_factory=Drift)
    extra: Drift = field(default_factory=Drift)
    ahead: Drift = field(default_factory=Drift)
    repairs_sent: int = 0
    seconds: float = 0.0

    @property
    def drifted(self) -> int:
        return sum(
            d.count for d in (self.missing, self.stale, self.corrupted, self.extra, self.ahead)
        )

    def as_dict(self) -> dict[str, Any]:
        kinds = ("missing", "stale", "corrupted", "extra", "ahead")
        return {
            "cqrs_id": self.cqrs_id,
            "queue": self.queue,
            "dry_run": self.dry_run,
            "master_rows": self.master_rows,
            "replica_rows": self.replica_rows,
            **{kind: {"count": getattr(self, kind).count, "sample": getattr(self, kind).sample}
               for kind in kinds},
            "repairs_sent": self.repairs_sent,
            "seconds": round(self.seconds, 3),
        }  # fmt: skip

    def summary(self) -> str:
        return (
            f"{self.cqrs_id} → {self.queue}: {self.master_rows} master rows, {self.replica_rows} "
            f"replica rows; missing {self.missing.count}, stale {self.stale.count}, corrupted "
            f"{self.corrupted.count}, extra {self.extra.count}, ahead {self.ahead.count}; "
            f"{self.repairs_sent} repairs {'found (dry run)' if self.dry_run else 'sent'} "
            f"in {self.seconds:.1f}s"
        )


def _master_pages(model: type[models.Model], fields: list[str], chunk: int) -> Iterator[list[dict]]:
    pk = model._meta.pk.name
    after = None
    while True:
        qs = model._default_manager.order_by(pk)
        if after is not None:
            qs = qs.filter(**{f"{pk}__gt": after})
        page = list(qs.values(pk, *dict.fromkeys(["cqrs_revision", *fields]))[:chunk])
        if page:
            yield page
        if len(page) < chunk:
            return
        after = page[-1][pk]


def _items(pages: Iterator[list]) -> Iterator:
    for page in pages:
        yield from page


def reconcile(
    model: type[models.Model],
    replica: ReplicaReader,
    *,
    chunk: int = 1000,
    dry_run: bool = False,
    progress: Callable[[Report], None] | None = None,
) -> Report:
    started = time.monotonic()
    cqrs_id = model.CQRS_ID
    report = Report(cqrs_id=cqrs_id, queue=replica.queue, dry_run=dry_run)
    pk_name = model._meta.pk.name

    replica_pages = replica.pages(cqrs_id, chunk)
    first_fields, first_rows = next(replica_pages)
    master_fields = {f.name for f in model._meta.concrete_fields}
    content = all(name in master_fields for name in first_fields)
    if not content:
        logger.warning("%s: the replica compares fields the master lacks; revisions only", cqrs_id)
    fields = first_fields if content else []

    def replica_rows() -> Iterator[list]:
        yield from first_rows
        for _, rows in replica_pages:
            yield from rows

    master = _items(_master_pages(model, fields, chunk))
    replica_iter = replica_rows()
    to_sync: list[Any] = []
    to_delete: list[tuple[Any, int]] = []
    m = next(master, None)
    r = next(replica_iter, None)
    while m is not None or r is not None:
        if r is None or (m is not None and m[pk_name] < r[0]):
            report.master_rows += 1
            report.missing.add(m[pk_name])
            to_sync.append(m[pk_name])
            m = next(master, None)
        elif m is None or r[0] < m[pk_name]:
            report.replica_rows += 1
            report.extra.add(r[0])
            to_delete.append((r[0], r[1]))
            r = next(replica_iter, None)
        else:
            report.master_rows += 1
            report.replica_rows += 1
            pk, revision = m[pk_name], m["cqrs_revision"]
            if r[1] < revision:
                report.stale.add(pk)
                to_sync.append(pk)
            elif r[1] > revision:
                report.ahead.add(pk)
            elif content and row_checksum(m, fields) != r[2]:
                report.corrupted.add(pk)
                to_sync.append(pk)
            m, r = next(master, None), next(replica_iter, None)
        if len(to_sync) + len(to_delete) >= chunk:
            report.repairs_sent += _repair(model, replica.queue, to_sync, to_delete, dry_run)
            to_sync, to_delete = [], []
            if progress:
                progress(report)
    report.repairs_sent += _repair(model, replica.queue, to_sync, to_delete, dry_run)
    report.seconds = time.monotonic() - started
    log = logger.warning if report.drifted else logger.info
    log("reconciliation %s", report.summary())
    return report


def _repair(
    model: type[models.Model],
    queue: str,
    to_sync: list[Any],
    to_delete: list[tuple[Any, int]],
    dry_run: bool,
) -> int:
    if dry_run or not (to_sync or to_delete):
        return len(to_sync) + len(to_delete)
    using = router.db_for_write(model)
    payloads = []
    with transaction.atomic(using=using):
        for instance in model._default_manager.filter(pk__in=to_sync):
            payload = OutboxSignals._save_payload(
                model, instance, {"using": using, "sync": True, "queue": queue}
            )
            if payload is not None:
                payloads.append(payload)
        now = str(timezone.now())
        payloads.extend(
            TransportPayload(
                SignalType.DELETE,
                model.CQRS_ID,
                {"id": pk, "cqrs_revision": revision + 1, "cqrs_updated": now},
                pk,
                queue,
            )
            for pk, revision in to_delete
        )
        if payloads:
            enqueue(payloads, using)
    return len(payloads)
