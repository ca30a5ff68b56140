"""Writes on the outbox after a change wrote its row (that is `writer.enqueue`): marking rows
published (the relays), republishing rows (the console) and pruning what was published long
enough ago (beat)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from django.db import connections, router, transaction
from django.utils import timezone

from django_tools.outbox import wake
from django_tools.outbox.models import OutboxEvent

PRUNE_CHUNK = 5000


def mark_published(ids: list[int]) -> None:
    """The broker confirmed these rows: they will not be sent again."""
    OutboxEvent.objects.filter(id__in=ids).update(published_at=timezone.now())


def republish(ids: Iterable[int]) -> list[int]:
    """Send these rows' events again: each becomes a NEW pending row (same routing key, body,
    correlation id and trace context) at the end of the outbox, in the old rows' order; returns
    the new ids. The old rows are left as they are.

    Not "set the old row back to pending": a relay may hold that row in flight (read, sent,
    waiting for the broker's confirm) and its `mark_published` of the old id, a moment later,
    would silently undo the operator's republish — the event then went out before the click,
    not after. A new row has an id no relay has read yet, so it is always sent after the
    republish. Replicas ignore what they already have (by revision)."""
    alias = router.db_for_write(OutboxEvent)
    with transaction.atomic(using=alias):
        now = timezone.now()
        copies = [
            OutboxEvent(
                cqrs_id=row.cqrs_id, instance_pk=row.instance_pk, signal_type=row.signal_type,
                revision=row.revision, routing_key=row.routing_key, body=row.body,
                correlation_id=row.correlation_id, trace_context=row.trace_context,
                created_at=now,
            )
            for row in OutboxEvent.objects.filter(id__in=list(ids)).order_by("id")
        ]  # fmt: skip
        created = [copy.id for copy in OutboxEvent.objects.bulk_create(copies)]
        if created:
            wake.after_write(connections[alias])
        return created


def prune_published(*, older_than: timedelta, chunk: int = PRUNE_CHUNK) -> int:
    """Delete rows published before `now - older_than`, a chunk at a time (short transactions,
    bounded memory); returns how many."""
    cutoff = timezone.now() - older_than
    deleted = 0
    while True:
        ids = list(
            OutboxEvent.objects.filter(published_at__lt=cutoff)
            .order_by("id")
            .values_list("id", flat=True)[:chunk]
        )
        if not ids:
            return deleted
        deleted += OutboxEvent.objects.filter(id__in=ids).delete()[0]
