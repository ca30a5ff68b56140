"""Writes on the outbox other than the relay's: pruning what was published long enough ago."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from django_tools.outbox.models import OutboxEvent

PRUNE_CHUNK = 5000


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
