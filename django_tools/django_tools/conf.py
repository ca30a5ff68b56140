"""The library's own settings (django_tools.outbox, django_tools.replica), each with its default:
a Django project using the apps sets in its settings only what it changes, besides django-cqrs's
own `CQRS` dict. The services' chassis (django_tools.chassis.settings.cqrs) reads each from its
environment variable on top of these defaults.

Read at call time through `setting(name)`, so `override_settings` and a project's own values
apply; never imported from a project's settings module.
"""

from __future__ import annotations

from typing import Any

from django_tools import limits

#: The django-cqrs transports of each role (CQRS["transport"]), as django-cqrs names them.
STOCK_TRANSPORT = "dj_cqrs.transport.RabbitMQTransport"
OUTBOX_TRANSPORT = "django_tools.outbox.transport.OutboxTransport"
REPLICA_TRANSPORT = "django_tools.replica.transport.ReliableRabbitMQTransport"

DEFAULTS: dict[str, Any] = {
    #: How changes travel: django-cqrs messages (cqrs) or one Celery task each (celery).
    "REPLICATION_MODE": "cqrs",
    #: The relay (django_tools.outbox.relays): rows a batch, bytes a batch, longest idle poll,
    #: seconds a batch waits for the broker's confirms.
    "OUTBOX_BATCH_SIZE": 500,
    "OUTBOX_BATCH_BYTES": limits.OUTBOX_BATCH_BYTES,
    "OUTBOX_POLL_MAX": 0.05,
    "OUTBOX_CONFIRM_TIMEOUT": 5.0,
    #: PostgreSQL: the statements run for every event (the outbox write, the relay's read, the
    #: replica's apply) as prepared statements of their session (django_tools.db.prepared).
    "DB_PREPARED_STATEMENTS": True,
    #: Seconds published outbox rows are kept before `outbox_prune` removes them.
    "OUTBOX_RETENTION": 3600,
    #: REPLICATION_MODE=celery: the replica's Celery queue the relay sends its tasks to.
    "REPLICA_TASK_QUEUE": "",
    #: Reconciliation (master): the replica's URL (its replication API) and rows a page.
    "RECONCILE_REPLICA_URL": "",
    "RECONCILE_CHUNK": 1000,
    #: REPLICATION_MODE=celery: the queue a dead letter is sent back to (Celery's own default).
    "CELERY_TASK_DEFAULT_QUEUE": "celery",
}


def setting(name: str) -> Any:
    """The project's value of the library setting `name`, else its default."""
    from django.conf import settings

    return getattr(settings, name, DEFAULTS[name])
