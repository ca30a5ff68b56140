"""Reconciliation, run by the master: compare its rows with a replica's by primary key,
revision and content checksum, a chunk at a time, and repair what drifted.

- missing on the replica, older revision, or same revision with other content → a `SYNC` of the
  master's row to that replica's queue (django-cqrs's sync event; the replica applies it by
  revision, and a same-revision sync overwrites);
- on the replica but no longer on the master → a `DELETE` to that replica's queue, one revision
  above the replica's (it then keeps a tombstone);
- newer on the replica than on the master → reported, not touched (something wrote the replica
  by hand; a sync would be ignored as stale);
- missing on the replica because it holds a tombstone at or above the master's revision (a
  wrong delete: every sync would be ignored as `deleted_before`) → the master's revision is
  raised above the tombstone, then synced: counted as `revived`.

Every decision is taken on the master's rows as they are when it is taken, inside the repair's
transaction, not on the page read earlier: a product created and replicated between the read of
the master's page and the read of the replica's looks "extra" at first, and deleting it would
delete a live product. Such rows are compared again with the master's current row instead.

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
from django_tools.outbox.signals import OutboxSignals
from django_tools.outbox.writer import enqueue

logger = logging.getLogger("django_tools.reconcile")

SAMPLE = 20  # ids kept per kind of drift, for the report


class ReplicaReader(Protocol):
    queue: str

    def pages(self, cqrs_id: str, chunk: int) -> Iterator[tuple[list[str], list[list]]]:
        """(compared field names, rows `[pk, revision, checksum]`) in key order."""

    def tombstones(self, cqrs_id: str, pks: list[Any]) -> dict[str, int]:
        """The revisions of the replica's tombstones among `pks`, by `str(pk)`."""


class ReplicaUnavailable(Exception):
    pass


class HttpReplicaReader:
    """A replica seen through its API: `/api/replication/status` for its queue,
    `/api/replication/rows` for its rows."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        if not base_url.lower().startswith(("http://", "https://")):
            # urllib also opens file: and ftp: URLs; a replica is only ever reached over HTTP.
            raise ReplicaUnavailable(f"replica URL {base_url!r}: use http:// or https://")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.queue = self._get("/api/replication/status")["queue"]["name"]

    def _get(self, path: str) -> dict:
        url = self.base_url + path
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:  # nosec B310 # http(s) only
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

    #: pks per tombstone request: a URL stays well under gunicorn's 4 KiB request line.
    TOMBSTONES_PER_REQUEST = 200

    def tombstones(self, cqrs_id: str, pks: list[Any]) -> dict[str, int]:
        found: dict[str, int] = {}
        for start in range(0, len(pks), self.TOMBSTONES_PER_REQUEST):
            query = [("cqrs_id", cqrs_id)] + [
                ("pk", str(pk)) for pk in pks[start : start + self.TOMBSTONES_PER_REQUEST]
            ]
            page = self._get(f"/api/replication/tombstones?{urllib.parse.urlencode(query)}")
            found.update({str(pk): revision for pk, revision in page["tombstones"]})
        return found


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
    revived: Drift = field(default_factory=Drift)  # missing behind a tombstone (among `missing`)
    repairs_sent: int = 0
    seconds: float = 0.0

    @property
    def drifted(self) -> int:
        return sum(
            d.count for d in (self.missing, self.stale, self.corrupted, self.extra, self.ahead)
        )

    def as_dict(self) -> dict[str, Any]:
        kinds = ("missing", "stale", "corrupted", "extra", "ahead", "revived")
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
            f"{self.corrupted.count}, extra {self.extra.count}, ahead {self.ahead.count}"
            f"{f' (revived {self.revived.count})' if self.revived.count else ''}; "
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


MISSING, STALE, CORRUPTED, EXTRA, AHEAD = "missing", "stale", "corrupted", "extra", "ahead"
SAME = ""


@dataclass
class _Comparison:
    """How one master row compares with the replica's row of the same key, either may be None."""

    master: dict | None
    replica: list | None  # [pk, revision, checksum]


class _Comparer:
    def __init__(self, model: type[models.Model], fields: list[str], content: bool) -> None:
        self.model, self.fields, self.content = model, fields, content
        self.pk_name = model._meta.pk.name

    def kind(self, master: dict | None, replica: list | None) -> str:
        if replica is None:
            return MISSING
        if master is None:
            return EXTRA
        revision = master["cqrs_revision"]
        if replica[1] < revision:
            return STALE
        if replica[1] > revision:
            return AHEAD
        if self.content and row_checksum(master, self.fields) != replica[2]:
            return CORRUPTED
        return SAME

    def current(self, pks: list[Any]) -> dict[Any, dict]:
        """The master's rows with these keys as they are now."""
        columns = dict.fromkeys([self.pk_name, "cqrs_revision", *self.fields])
        rows = self.model._default_manager.filter(pk__in=pks).values(*columns)
        return {row[self.pk_name]: row for row in rows}


def _merge(master: Iterator[dict], replica: Iterator[list], pk_name: str) -> Iterator[_Comparison]:
    """Both sides in key order, paired by key."""
    m, r = next(master, None), next(replica, None)
    while m is not None or r is not None:
        if r is None or (m is not None and m[pk_name] < r[0]):
            yield _Comparison(m, None)
            m = next(master, None)
        elif m is None or r[0] < m[pk_name]:
            yield _Comparison(None, r)
            r = next(replica, None)
        else:
            yield _Comparison(m, r)
            m, r = next(master, None), next(replica, None)


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
    comparer = _Comparer(model, first_fields if content else [], content)

    def replica_rows() -> Iterator[list]:
        yield from first_rows
        for _, rows in replica_pages:
            yield from rows

    master = _items(_master_pages(model, comparer.fields, chunk))
    drifted: list[_Comparison] = []
    for pair in _merge(master, replica_rows(), pk_name):
        report.master_rows += pair.master is not None
        report.replica_rows += pair.replica is not None
        if comparer.kind(pair.master, pair.replica):
            drifted.append(pair)
        if len(drifted) >= chunk:
            _repair(comparer, replica, report, drifted, dry_run)
            drifted = []
            if progress:
                progress(report)
    _repair(comparer, replica, report, drifted, dry_run)
    report.seconds = time.monotonic() - started
    log = logger.warning if report.drifted else logger.info
    log("reconciliation %s", report.summary())
    return report


def _repair(
    comparer: _Comparer,
    replica: ReplicaReader,
    report: Report,
    drifted: list[_Comparison],
    dry_run: bool,
) -> None:
    """Decide on the master's rows as they are now (in the transaction that writes the
    repairs), count what drifted and write the repairs to the outbox."""
    if not drifted:
        return
    model = comparer.model
    using = router.db_for_write(model)
    with transaction.atomic(using=using):
        # Rows the master had no row for when its page was read: look again, now.
        now_on_master = comparer.current([p.replica[0] for p in drifted if p.master is None])
        to_sync: list[Any] = []
        to_delete: list[tuple[Any, int]] = []
        for pair in drifted:
            master = pair.master
            if master is None and pair.replica[0] in now_on_master:
                master = now_on_master[pair.replica[0]]  # created after its page was read
            kind = comparer.kind(master, pair.replica)
            if not kind:
                continue
            pk = master[comparer.pk_name] if master is not None else pair.replica[0]
            getattr(report, kind).add(pk)
            if kind == EXTRA:
                to_delete.append((pk, pair.replica[1]))
            elif kind != AHEAD:
                to_sync.append(pk)
        revive = _behind_tombstones(comparer, replica, report, drifted, to_sync)
        report.repairs_sent += len(to_sync) + len(to_delete)
        if not dry_run and (to_sync or to_delete):
            _write_repairs(model, using, replica.queue, to_sync, to_delete, revive)


def _behind_tombstones(
    comparer: _Comparer,
    replica: ReplicaReader,
    report: Report,
    drifted: list[_Comparison],
    to_sync: list[Any],
) -> dict[Any, int]:
    """Missing rows the replica holds a tombstone for, at or above the master's revision: a
    sync alone would be ignored. pk → the revision the master row must take."""
    missing = {p.master[comparer.pk_name]: p.master for p in drifted if p.replica is None}
    missing = {pk: row for pk, row in missing.items() if pk in to_sync}
    if not missing:
        return {}
    tombstones = replica.tombstones(comparer.model.CQRS_ID, list(missing))
    revive = {}
    for pk, row in missing.items():
        buried = tombstones.get(str(pk))
        if buried is not None and buried >= row["cqrs_revision"]:
            revive[pk] = buried + 1
            report.revived.add(pk)
    return revive


def _write_repairs(
    model: type[models.Model],
    using: str,
    queue: str,
    to_sync: list[Any],
    to_delete: list[tuple[Any, int]],
    revive: dict[Any, int],
) -> None:
    for pk, revision in revive.items():
        # Above the tombstone, so this sync and every later save of the master apply.
        model._default_manager.filter(pk=pk, cqrs_revision__lt=revision).update(
            cqrs_revision=revision
        )
    payloads = []
    for instance in model._default_manager.filter(pk__in=to_sync).select_for_update():
        payload = OutboxSignals.save_payload(
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
