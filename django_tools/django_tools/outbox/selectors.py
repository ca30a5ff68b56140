"""Reads of the outbox, for status pages, metrics and housekeeping."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import connections, router
from django.db.models import Max, Min
from django.utils import timezone

from django_tools.conf import setting
from django_tools.db import prepared
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


class Rows(list):
    """The rows of one read, and whether they were every unpublished row past its `after`
    when it ran (`drained`): fewer than its limit, none left out by the byte budget."""

    drained: bool = False


def unpublished_rows(limit: int, after: int | None = None, max_bytes: int | None = None) -> Rows:
    """The oldest unpublished rows (with an id above `after`), what a relay sends:
    (id, routing key, body, correlation id, trace context). At most `limit` rows, and at most
    `max_bytes` of bodies (OUTBOX_BATCH_BYTES; always the first row, however large), so that a
    batch of large rows never holds more than that."""
    if max_bytes is None:
        max_bytes = setting("OUTBOX_BATCH_BYTES")
    # Where the relay marks them published: never a read replica's older copy.
    connection = connections[router.db_for_write(OutboxEvent)]
    # Run for every batch, and at low load for every event: planned once (`db.prepared`).
    fetched = prepared.fetchall(
        connection, _unpublished_sql(connection, after is not None),
        [*([after] if after is not None else []), limit, max_bytes],
    )  # fmt: skip
    # Each row carries how many rows its page held (the budget may have left some out).
    rows = Rows(row[:5] for row in fetched)
    rows.drained = not fetched or (len(fetched) == fetched[0][5] < limit)
    return rows


def _unpublished_sql(connection, after: bool) -> str:
    """One statement: the sizes of the next `limit` pending rows (read without their bodies:
    PostgreSQL's octet_length takes a large value's size from its header), a running sum over
    them, and the bodies of only the rows whose running sum is within the budget. Raw SQL
    because the ORM cannot join a windowed subquery; the relay runs it for every batch."""
    quote = connection.ops.quote_name
    table = quote(OutboxEvent._meta.db_table)
    size = "LENGTH(CAST(body AS BLOB))" if connection.vendor == "sqlite" else "OCTET_LENGTH(body)"
    # Names from the model and the backend, values as parameters: not an injection.
    return (
        "SELECT o.id, o.routing_key, o.body, o.correlation_id, o.trace_context, "  # nosec B608
        "sized.paged "
        f"FROM {table} o JOIN ("
        "  SELECT id, SUM(size) OVER (ORDER BY id) AS total, size, COUNT(*) OVER () AS paged"
        "  FROM ("
        f"    SELECT id, {size} AS size FROM {table} WHERE published_at IS NULL"
        f"    {'AND id > %s' if after else ''} ORDER BY id LIMIT %s"
        "  ) AS page"
        ") AS sized ON sized.id = o.id "
        # Up to the row that would pass the budget; the first row always (its sum is itself).
        "WHERE sized.total <= %s OR sized.total = sized.size ORDER BY o.id"
    )
