"""Reads of the outbox, for status pages, metrics and housekeeping."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import Func, IntegerField, Max, Min
from django.utils import timezone

from django_tools import limits
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


class OctetLength(Func):
    """The size of a text in bytes (not characters), read without fetching the text: PostgreSQL
    takes it from the value's header, even for a large (TOASTed) one."""

    function = "OCTET_LENGTH"
    output_field = IntegerField()

    def as_sqlite(self, compiler, connection, **extra_context):
        return self.as_sql(compiler, connection, template="LENGTH(CAST(%(expressions)s AS BLOB))")


def unpublished_rows(
    limit: int, after: int | None = None, max_bytes: int | None = None
) -> list[tuple[int, str, str, str, str]]:
    """The oldest unpublished rows (with an id above `after`), what a relay sends:
    (id, routing key, body, correlation id, trace context). At most `limit` rows, and at most
    `max_bytes` of bodies (OUTBOX_BATCH_BYTES; always at least one row), so that a batch of large
    rows never holds more: their sizes are read first, then only the bodies that fit."""
    pending = OutboxEvent.objects.filter(published_at__isnull=True)
    if after is not None:
        pending = pending.filter(id__gt=after)
    pending = pending.order_by("id")
    if max_bytes is None:
        max_bytes = getattr(settings, "OUTBOX_BATCH_BYTES", limits.OUTBOX_BATCH_BYTES)
    sizes = pending.annotate(size=OctetLength("body")).values_list("id", "size")[:limit]
    chosen, total = [], 0
    for outbox_id, size in sizes:
        total += size or 0
        if chosen and total > max_bytes:
            break
        chosen.append(outbox_id)
    if not chosen:
        return []
    columns = ("id", "routing_key", "body", "correlation_id", "trace_context")
    return list(pending.filter(id__in=chosen).values_list(*columns))
