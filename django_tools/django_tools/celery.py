"""The Celery app of a service: broker RabbitMQ, results in Redis, tasks of its own queue, the
beat schedule from its settings."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from django_tools.env import env_str


def make_celery(service: str, settings_module: str) -> Celery:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", settings_module)
    app = Celery(f"api_{service}")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    # Celery's Django fixup closes the database connection after every task unless told to
    # reuse it; reopening it (and SQLite's pragmas) cost more than the tasks themselves.
    # Django's CONN_MAX_AGE and health checks already retire stale connections.
    app.conf.update(CELERY_DB_REUSE_MAX=10_000)
    app.autodiscover_tasks()
    return app


def task_queue(service: str) -> str:
    """`<service>.tasks`, after CELERY_QUEUE_PREFIX (tests and benchmarks isolate themselves)."""
    return f"{env_str('CELERY_QUEUE_PREFIX')}{service}.tasks"


def celery_settings(
    service: str, rabbitmq_url: str, redis_url: str, beat_schedule: dict[str, Any]
) -> dict[str, Any]:
    """`CELERY_*` settings (read by make_celery through config_from_object)."""
    return {
        "CELERY_BROKER_URL": rabbitmq_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "CELERY_RESULT_EXPIRES": 3600,
        # Each service's tasks on a queue of its own: two apps share the broker.
        "CELERY_TASK_DEFAULT_QUEUE": task_queue(service),
        "CELERY_TASK_SERIALIZER": "json",
        "CELERY_ACCEPT_CONTENT": ["json"],
        # A task is acknowledged when it finished, and a worker killed mid-task gives it back.
        "CELERY_TASK_ACKS_LATE": True,
        "CELERY_TASK_REJECT_ON_WORKER_LOST": True,
        "CELERY_WORKER_PREFETCH_MULTIPLIER": 1,
        "CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP": True,
        "CELERY_BROKER_TRANSPORT_OPTIONS": {"confirm_publish": True},
        "CELERY_WORKER_HIJACK_ROOT_LOGGER": False,
        "CELERY_BEAT_SCHEDULE": beat_schedule,
    }
