"""The replica's replication API, mounted by a replica service (e.g. under /api/replication/):
`status` for people and monitoring, `rows` and `tombstones` for a master's reconciliation
(`django_tools.outbox.reconcile.HttpReplicaReader`), which always names the CQRS_ID."""

from datetime import datetime
from typing import Annotated

from django.http import Http404, HttpRequest
from ninja import Field, Query, Router, Schema
from pydantic import StringConstraints

from django_tools.replica.messages import UnknownCqrsId
from django_tools.replica.rows import rows_page, tombstones
from django_tools.replica.status import replication_status
from django_tools.schemas import MAX_BIGINT, ErrorOut

router = Router(tags=["replication"])


class BrokerOut(Schema):
    reachable: bool
    error: str | None


class QueueOut(Schema):
    name: str
    depth: int | None
    consumers: int | None
    #: Messages held in `<name>.migrating` by a queue migration in progress or interrupted
    #: (`cqrs_queues migrate`); None when there is none. Counted in the estimated lag.
    migrating: int | None = None


class DeadLettersOut(Schema):
    queue: str
    count: int | None


class LastAppliedOut(Schema):
    cqrs_id: str
    instance_pk: str
    revision: int
    signal_type: str
    applied_at: datetime
    master_updated_at: datetime | None
    delay_ms: float | None
    correlation_id: str


class ConsumerOut(Schema):
    """Progress of the replica's consumer: `stalled` when messages have waited in the queue for
    `stall_after_seconds` (CQRS_STALL_AFTER) and nothing was applied meanwhile."""

    stalled: bool
    detail: str | None
    last_applied_age_seconds: float | None
    stall_after_seconds: float


class ReplicationStatusOut(Schema):
    broker: BrokerOut
    queue: QueueOut
    dead_letters: DeadLettersOut
    retries_scheduled: int | None
    last_applied: LastAppliedOut | None
    estimated_lag_seconds: float | None
    consumer: ConsumerOut


@router.get("/status", response=ReplicationStatusOut)
def status(request: HttpRequest):
    current = replication_status()
    depths = current.broker.depths
    last = current.last_applied
    return {
        "broker": {"reachable": current.broker.reachable, "error": current.broker.error},
        "queue": {
            "name": current.queue,
            "depth": depths.queue,
            "consumers": depths.consumers,
            "migrating": depths.migrating,
        },
        "dead_letters": {"queue": current.dead_letter_queue, "count": depths.dead_letters},
        "retries_scheduled": depths.retries_scheduled,
        "last_applied": None
        if last is None
        else {
            "cqrs_id": last.cqrs_id,
            "instance_pk": last.instance_pk,
            "revision": last.revision,
            "signal_type": last.signal_type,
            "applied_at": last.applied_at,
            "master_updated_at": last.master_updated_at,
            "delay_ms": current.last_applied_delay_ms,
            "correlation_id": last.correlation_id,
        },
        "estimated_lag_seconds": current.estimated_lag_seconds,
        "consumer": {
            "stalled": current.consumer.stalled,
            "detail": current.consumer.detail,
            "last_applied_age_seconds": _rounded(current.consumer.last_applied_age_seconds),
            "stall_after_seconds": current.consumer.stall_after,
        },
    }


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


class RowsQuery(Schema):
    cqrs_id: str = Field(..., max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    after: int | None = Field(None, ge=0, le=MAX_BIGINT)
    limit: int = Field(1000, ge=1, le=10000)


class RowsOut(Schema):
    cqrs_id: str
    fields: list[str]
    rows: list[list[int | str]]  # [pk, revision, checksum]


@router.get("/rows", response={200: RowsOut, 404: ErrorOut, 422: ErrorOut})
def rows(request: HttpRequest, query: Query[RowsQuery]):
    """Replica rows in key order, `[pk, revision, checksum]`, a page at a time: what the master's
    reconciliation (`cqrs_reconcile`) compares with its own rows."""
    try:
        return rows_page(query.cqrs_id, query.after, query.limit)
    except UnknownCqrsId as exc:
        raise Http404(str(exc)) from None


class TombstonesQuery(Schema):
    cqrs_id: str = Field(..., max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    # Each key as long as a tombstone's (64): no text field without a maximum.
    pk: list[Annotated[str, StringConstraints(max_length=64)]] = Field(
        ..., min_length=1, max_length=500
    )


class TombstonesOut(Schema):
    cqrs_id: str
    tombstones: list[list[int | str]]  # [pk, revision]


# 400: more query fields than Django parses (DATA_UPLOAD_MAX_NUMBER_FIELDS), refused before
# the view runs.
@router.get(
    "/tombstones", response={200: TombstonesOut, 400: ErrorOut, 404: ErrorOut, 422: ErrorOut}
)
def tombstones_of(request: HttpRequest, query: Query[TombstonesQuery]):
    """The tombstones (deleted rows, with the revision of their delete) among the given keys:
    `?pk=1&pk=2`. Reconciliation asks for the rows it finds missing."""
    try:
        return tombstones(query.cqrs_id, query.pk)
    except UnknownCqrsId as exc:
        raise Http404(str(exc)) from None
