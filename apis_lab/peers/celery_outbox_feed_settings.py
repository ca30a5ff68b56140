"""api_feed for the lab's `celery-outbox` peer (issue 23): the replica's settings with the
Celery topology of django-celery-outbox's Getting Started (topic exchange, quorum queue, native
delayed delivery), so that its worker consumes what the library's relay sends. The worker runs
`celery -A api_feed worker` under these settings (DJANGO_SETTINGS_MODULE); nothing of the
library runs on the replica."""

from api_feed.settings import *  # noqa: F403
from api_feed.settings import CELERY_TASK_DEFAULT_QUEUE
from apis_lab.peers.celery_outbox_conf import NO_TELEMETRY, celery_settings, configure_structlog

globals().update(celery_settings(CELERY_TASK_DEFAULT_QUEUE))
globals().update(NO_TELEMETRY)
configure_structlog()
