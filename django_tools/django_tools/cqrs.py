"""django-cqrs settings both services build from `RABBITMQ_URL`.

The wire format stays django-cqrs's own (topic exchange `cqrs`, routing key = CQRS_ID, the
`TransportPayload.to_dict()` body as JSON, persistent messages), so a stock django-cqrs master or
replica can talk to these services.
"""

from __future__ import annotations

from typing import Any

from django_tools.env import env_float, env_int, env_str
from django_tools.observability.correlation import cqrs_correlation_function

STOCK_TRANSPORT = "dj_cqrs.transport.RabbitMQTransport"
OUTBOX_TRANSPORT = "django_tools.outbox.transport.OutboxTransport"
REPLICA_TRANSPORT = "django_tools.replica.transport.ReliableRabbitMQTransport"
DEFAULT_EXCHANGE = "cqrs"


def _common(rabbitmq_url: str, transport: str) -> dict[str, Any]:
    return {
        "transport": env_str("CQRS_TRANSPORT") or transport,
        "url": rabbitmq_url,
        # Overridable so that test runs and benchmarks get an exchange of their own and never
        # deliver into the queues of a lab running on the same broker.
        "exchange": env_str("CQRS_EXCHANGE") or DEFAULT_EXCHANGE,
    }


def master_settings(rabbitmq_url: str) -> dict[str, Any]:
    return {
        # Writes go to the outbox in their own transaction; the relay publishes them.
        **_common(rabbitmq_url, OUTBOX_TRANSPORT),
        "master": {
            "CQRS_AUTO_UPDATE_FIELDS": False,
            # An event never expires on its way: a replica that was offline for days must
            # still converge instead of dead-lettering what it missed.
            "CQRS_MESSAGE_TTL": None,
            # The id of the request making a change travels with its event.
            "correlation_function": cqrs_correlation_function,
        },
    }


def replica_settings(rabbitmq_url: str, default_queue: str) -> dict[str, Any]:
    """Replica settings for `django_tools.replica`'s consumer; the retry policy is read by
    `RetryPolicy.from_settings` (see CQRS.md, "Falhas e reprocessamento")."""
    return {
        **_common(rabbitmq_url, REPLICA_TRANSPORT),
        "queue": env_str("CQRS_QUEUE") or default_queue,
        "replica": {
            "CQRS_MAX_RETRIES": env_int("CQRS_MAX_RETRIES", 12),
            "retry_base": env_float("CQRS_RETRY_BASE", 1.0),
            "retry_factor": env_float("CQRS_RETRY_FACTOR", 2.0),
            "retry_cap": env_float("CQRS_RETRY_CAP", 300.0),
            "retry_jitter": env_float("CQRS_RETRY_JITTER", 0.2),
            "prefetch": env_int("CQRS_PREFETCH", 200),
            "batch_size": env_int("CQRS_BATCH_SIZE", 100),
            # Dead letters stay until someone reads them (`cqrs_dead_letters`).
            "dead_message_ttl": None,
        },
    }


def outbox_settings() -> dict[str, Any]:
    """The relay's knobs (see django_tools.outbox.relay)."""
    return {
        "batch_size": env_int("OUTBOX_BATCH_SIZE", 500),
        "poll_max": env_float("OUTBOX_POLL_MAX", 0.05),
        "retention_seconds": env_int("OUTBOX_RETENTION", 3600),
        "prune_every_seconds": env_int("OUTBOX_PRUNE_EVERY", 60),
    }


def reconcile_settings() -> dict[str, Any]:
    """Where the master finds its replica for reconciliation, and how often beat runs it."""
    return {
        "replica_url": env_str("FEED_URL") or "http://localhost:8000",
        "interval_seconds": env_float("RECONCILE_INTERVAL", 300.0),
        "chunk": env_int("RECONCILE_CHUNK", 1000),
    }
