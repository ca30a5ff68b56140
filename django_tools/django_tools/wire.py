"""What travels between a master and its replicas, named once: the exchange, the routing keys
and, in REPLICATION_MODE=celery, the task that carries a change."""

from __future__ import annotations

#: django-cqrs's topic exchange.
DEFAULT_EXCHANGE = "cqrs"

#: REPLICATION_MODE=celery: the replica's task applying one change (django-cqrs's payload JSON).
APPLY_TASK = "replica.apply_event"


def routing_key(cqrs_id: str, queue: str | None = None) -> str:
    """django-cqrs's routing: the CQRS_ID, or `cqrs.<queue>.<CQRS_ID>` for an event meant for
    one replica's queue (django-cqrs does that for syncs; reconciliation also for deletes)."""
    return f"cqrs.{queue}.{cqrs_id}" if queue else cqrs_id
