"""api_produtos under django-celery-outbox (the lab's `celery-outbox` peer, issue 23): the
master's settings, plus the library as its Quick Start and Getting Started say (the app in
INSTALLED_APPS, `CELERY_OUTBOX_APP`, the Celery topology of its `celeryconfig.py`), plus the
lab's app that sends each change through it instead of this project's outbox. Its relay runs as
`manage.py celery_outbox_relay` under these settings (DJANGO_SETTINGS_MODULE)."""

from api_produtos.settings import *  # noqa: F403
from api_produtos.settings import (
    CELERY_TASK_DEFAULT_QUEUE,
    INSTALLED_APPS,
    REPLICA_TASK_QUEUE,
)
from apis_lab.peers.celery_outbox_conf import NO_TELEMETRY, celery_settings, configure_structlog

# After this project's outbox app: the lab's app replaces the handlers that one installs.
INSTALLED_APPS = [
    *INSTALLED_APPS,
    "django_celery_outbox",
    "apis_lab.peers.celery_outbox_conf.MasterConfig",
]
CELERY_OUTBOX_APP = "apis_lab.peers.celery_outbox_master.app"
globals().update(celery_settings(CELERY_TASK_DEFAULT_QUEUE, REPLICA_TASK_QUEUE))
globals().update(NO_TELEMETRY)
configure_structlog()
