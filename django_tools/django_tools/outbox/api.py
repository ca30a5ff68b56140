"""GET /api/outbox/status: the outbox backlog of a master, and whether the relay makes progress
(`outbox.progress`)."""

from datetime import datetime

from django.http import HttpRequest
from ninja import Router, Schema

from django_tools.outbox.progress import relay_progress

router = Router(tags=["outbox"])


class OutboxStatusOut(Schema):
    backlog: int
    oldest_created_at: datetime | None
    oldest_age_seconds: float
    last_published_at: datetime | None
    #: Rows have waited longer than `stall_after_seconds` (CQRS_STALL_AFTER) and nothing was
    #: published in that time: the relay is paused, stuck, or cannot reach the broker.
    stalled: bool
    detail: str | None
    stall_after_seconds: float


@router.get("/status", response=OutboxStatusOut)
def status(request: HttpRequest):
    progress = relay_progress()
    backlog = progress.backlog
    return {
        "backlog": backlog.count,
        "oldest_created_at": backlog.oldest_created_at,
        "oldest_age_seconds": round(backlog.oldest_age_seconds, 3),
        "last_published_at": backlog.last_published_at,
        "stalled": progress.stalled,
        "detail": progress.detail,
        "stall_after_seconds": progress.stall_after,
    }
