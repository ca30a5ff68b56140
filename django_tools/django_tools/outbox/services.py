"""Writes on the outbox after a change wrote its row (that is `writer.enqueue`): marking rows
published (the relays) and pruning what was published long enough ago (beat)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from django_tools.outbox.models import OutboxEvent

PRUNE_CHUNK = 5000


def mark_published(ids: list[int]) -> None:
    """The broker confirmed these rows: they will not be sent again."""
    OutboxEvent.objects.filter(id__in=ids).update(published_at=timezone.now())


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
