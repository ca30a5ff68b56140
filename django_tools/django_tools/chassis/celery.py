"""The Celery app of a service, configured by its `CELERY_*` settings
(django_tools.chassis.settings.celery and the service's own queue and beat schedule)."""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

from django_tools.env import exit_on_bad_setting


def task_queues(*names: str, queue_type: str) -> list[Queue]:
    """The services' task queues, each declared with its type wherever it is used (a worker
    consuming it, a relay or beat publishing to it): one declaration, no 406 between them."""
    return [Queue(name, queue_arguments={"x-queue-type": queue_type}) for name in names]


def _load_settings(sender: Celery, **kwargs) -> None:
    """Celery reads the Django settings lazily, deep in its command line: loaded here first (its
    `on_configure`, before it reads them), a bad setting is one line and exit 2."""
    from django.conf import settings

    program = os.environ.get("DJANGO_SETTINGS_MODULE", sender.main or "celery").split(".")[0]
    with exit_on_bad_setting(program):
        settings.INSTALLED_APPS  # noqa: B018 # the settings modules run here


def make_celery(service: str, settings_module: str) -> Celery:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", settings_module)
    app = Celery(f"api_{service}")
    app.on_configure.connect(_load_settings, weak=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    # Celery's Django fixup closes the database connection after every task unless told to
    # reuse it; reopening it (and SQLite's pragmas) cost more than the tasks themselves.
    # Django's CONN_MAX_AGE and health checks already retire stale connections.
    app.conf.update(CELERY_DB_REUSE_MAX=10_000)
    app.autodiscover_tasks()
    return app
