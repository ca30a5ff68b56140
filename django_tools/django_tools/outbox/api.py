"""GET /api/outbox/status: the outbox backlog of a master."""

from datetime import datetime

from django.http import HttpRequest
from ninja import Router, Schema

from django_tools.outbox.selectors import outbox_backlog

router = Router(tags=["outbox"])


class OutboxStatusOut(Schema):
    backlog: int
    oldest_created_at: datetime | None
    oldest_age_seconds: float
    last_published_at: datetime | None


@router.get("/status", response=OutboxStatusOut)
def status(request: HttpRequest):
    backlog = outbox_backlog()
    return {
        "backlog": backlog.count,
        "oldest_created_at": backlog.oldest_created_at,
        "oldest_age_seconds": round(backlog.oldest_age_seconds, 3),
        "last_published_at": backlog.last_published_at,
    }
