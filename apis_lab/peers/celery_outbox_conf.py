"""What both sides of the `celery-outbox` peer share (issue 23): the Celery topology that
django-celery-outbox's Getting Started gives (a topic exchange named like each queue, quorum
queues, RabbitMQ's native delayed delivery on quorum queues, publisher confirms), structlog
routed into the services' own logging, and the master's Django app that switches the
project's outbox off and sends each change through the library instead.

Light on purpose: no import of the library or of any model here (Django imports this module
while it loads its apps)."""

from __future__ import annotations

from django.apps import AppConfig
from kombu import Exchange, Queue


def celery_settings(default_queue: str, *queues: str) -> dict:
    """The `CELERY_*` settings of the library's Getting Started (its `celeryconfig.py`) for a
    service whose own tasks go to `default_queue` and which also publishes to `queues`."""
    return {
        "CELERY_TASK_QUEUES": [
            Queue(
                name,
                Exchange(name, type="topic"),
                routing_key=name,
                queue_arguments={"x-queue-type": "quorum"},
            )
            for name in (default_queue, *queues)
        ],
        "CELERY_TASK_DEFAULT_QUEUE": default_queue,
        "CELERY_TASK_DEFAULT_EXCHANGE": default_queue,
        "CELERY_TASK_DEFAULT_EXCHANGE_TYPE": "topic",
        "CELERY_TASK_DEFAULT_ROUTING_KEY": default_queue,
        "CELERY_TASK_DEFAULT_QUEUE_TYPE": "quorum",
        "CELERY_TASK_CREATE_MISSING_QUEUES": False,
        "CELERY_QUEUE_TYPE": "quorum",
        "CELERY_BROKER_NATIVE_DELAYED_DELIVERY_QUEUE_TYPE": "quorum",
        "CELERY_WORKER_DETECT_QUORUM_QUEUES": True,
    }


#: Nothing of the library phones home: its StatsD metrics (datadog's DogStatsd, UDP to
#: localhost:9125 by default) are off, and Sentry is never initialised (no DSN: its spans and
#: `capture_exception` are no-ops).
NO_TELEMETRY = {"MONITORING_METRICS_ENABLED": False}


def configure_structlog() -> None:
    """The library logs with structlog; by default structlog prints every event, DEBUG too, to
    stdout. Routed into the standard logging here, so that LOG_LEVEL, the services' format
    and their secret scrubbing apply to it as to every other line."""
    import structlog

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.processors.format_exc_info,
            structlog.processors.KeyValueRenderer(key_order=["event"], sort_keys=True),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


class MasterConfig(AppConfig):
    """On the master: each change of a django-cqrs master model goes through the library's
    `OutboxCelery.send_task` in the change's transaction, instead of into this project's
    outbox (celery_outbox_master.CeleryOutboxSignals)."""

    name = "apis_lab.peers"
    label = "celery_outbox_lab"
    verbose_name = "celery-outbox peer (lab)"

    def ready(self) -> None:
        from apis_lab.peers.celery_outbox_master import CeleryOutboxSignals

        CeleryOutboxSignals.install()
