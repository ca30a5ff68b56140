"""The one place where a master's change becomes an event: a row of the outbox."""

from __future__ import annotations

import orjson
from dj_cqrs.constants import SignalType
from dj_cqrs.dataclasses import TransportPayload
from django.utils import timezone

from django_tools.outbox.models import OutboxEvent


def routing_key(payload: TransportPayload) -> str:
    """django-cqrs's routing: the CQRS_ID, or `cqrs.<queue>.<CQRS_ID>` for a sync to one queue."""
    if payload.signal_type == SignalType.SYNC and payload.queue:
        return f"cqrs.{payload.queue}.{payload.cqrs_id}"
    return payload.cqrs_id


def enqueue(payload: TransportPayload, using: str | None = None) -> OutboxEvent:
    """Write the event in the current transaction; the relay publishes it after the commit."""
    revision = (payload.instance_data or {}).get("cqrs_revision")
    return OutboxEvent.objects.using(using).create(
        cqrs_id=payload.cqrs_id,
        instance_pk=str(payload.pk),
        signal_type=payload.signal_type,
        revision=revision if isinstance(revision, int) else None,
        routing_key=routing_key(payload),
        body=orjson.dumps(payload.to_dict()).decode(),
        correlation_id=str(payload.correlation_id or "")[:128],
        created_at=timezone.now(),
    )
