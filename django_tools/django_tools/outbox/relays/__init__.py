"""Relays: outbox rows → the broker. See `base` for what every relay does."""

from __future__ import annotations

from django.conf import settings

from django_tools.conf import setting
from django_tools.heartbeat import RELAY_FILE, Heartbeat, heartbeat_dir
from django_tools.outbox.relays.base import Relay, RelayStats


def relay_for_settings(batch_size: int | None = None) -> Relay:
    """The relay this master runs: AMQP (django-cqrs messages) or Celery tasks; it writes
    its heartbeat for `outbox_relay_health`."""
    batch_size = batch_size or setting("OUTBOX_BATCH_SIZE")
    heartbeat = Heartbeat(heartbeat_dir() / RELAY_FILE)
    if setting("REPLICATION_MODE") == "celery":
        from celery import current_app

        from django_tools.outbox.relays.celery import CeleryRelay

        return CeleryRelay(
            current_app,
            setting("REPLICA_TASK_QUEUE"),
            batch_size=batch_size,
            poll_max=setting("OUTBOX_POLL_MAX"),
            confirm_timeout=setting("OUTBOX_CONFIRM_TIMEOUT"),
            heartbeat=heartbeat,
        )
    from django_tools.outbox.relays.amqp import AmqpRelay

    return AmqpRelay(
        settings.CQRS["url"],
        settings.CQRS["exchange"],
        batch_size=batch_size,
        poll_max=setting("OUTBOX_POLL_MAX"),
        confirm_timeout=setting("OUTBOX_CONFIRM_TIMEOUT"),
        heartbeat=heartbeat,
    )


__all__ = ["Relay", "RelayStats", "relay_for_settings"]
