"""Reads of the outbox, for status pages, metrics and housekeeping."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Max, Min
from django.utils import timezone

from django_tools.outbox.models import OutboxEvent


@dataclass(frozen=True)
class Backlog:
    count: int
    oldest_created_at: datetime | None
    last_published_at: datetime | None

    @property
    def oldest_age_seconds(self) -> float:
        if self.oldest_created_at is None:
            return 0.0
        return max(0.0, (timezone.now() - self.oldest_created_at).total_seconds())


def outbox_backlog() -> Backlog:
    pending = OutboxEvent.objects.filter(published_at__isnull=True)
    oldest = pending.aggregate(oldest=Min("created_at"))["oldest"]
    last = OutboxEvent.objects.aggregate(last=Max("published_at"))["last"]
    return Backlog(count=pending.count(), oldest_created_at=oldest, last_published_at=last)


def unpublished_rows(limit: int, after: int | None = None) -> list[tuple[int, str, str, str, str]]:
    """The oldest unpublished rows (with an id above `after`), what a relay sends:
    (id, routing key, body, correlation id, trace context)."""
    pending = OutboxEvent.objects.filter(published_at__isnull=True)
    if after is not None:
        pending = pending.filter(id__gt=after)
    columns = ("id", "routing_key", "body", "correlation_id", "trace_context")
    return list(pending.order_by("id").values_list(*columns)[:limit])
