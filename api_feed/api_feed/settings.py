"""Settings of api_feed, the replica: consumes Produto events into ProdutoMirror.

The shared settings come from django_tools.chassis.settings (one module per concern); what
follows them is this service's own.
"""

from pathlib import Path

from django_tools.chassis.celery import task_queues
from django_tools.env import env_float, env_int, load_service_env

SERVICE_NAME = "feed"
#: How the operator's console names this service (its header: django_tools.admin).
SERVICE_LABEL = "api_feed"
BASE_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = BASE_DIR.parent
load_service_env(SERVICE_NAME, REPO_ROOT)  # .env.feed, before anything reads the environment

from django_tools.chassis.settings.base import *  # noqa: E402, F403
from django_tools.chassis.settings.celery import *  # noqa: E402, F403
from django_tools.chassis.settings.cqrs import *  # noqa: E402, F403
from django_tools.chassis.settings.logging import *  # noqa: E402, F403
from django_tools.chassis.settings.tracing import *  # noqa: E402, F403

# django_tools.replica before dj_cqrs: its cqrs_consume and cqrs_dead_letters replace the stock
# commands of the same name.
INSTALLED_APPS = [*DJANGO_APPS, "django_tools.replica", "dj_cqrs", "django_tools", "feed"]  # noqa: F405
ROOT_URLCONF = "api_feed.urls"
WSGI_APPLICATION = "api_feed.wsgi.application"
DATABASES = database_settings(SERVICE_NAME, REPO_ROOT)  # noqa: F405
# Unset: this machine's own key under var/ (loopback only: django_tools.exposure).
SECRET_KEY = SECRET_KEY or local_secret_key(REPO_ROOT / "var")  # noqa: F405

CQRS = {
    "transport": CQRS_TRANSPORT or REPLICA_TRANSPORT,  # noqa: F405
    "url": RABBITMQ_URL,  # noqa: F405
    "exchange": CQRS_EXCHANGE,  # noqa: F405
    "queue": CQRS_QUEUE or "api_feed",  # noqa: F405
    "replica": CQRS_REPLICA_OPTIONS,  # noqa: F405
}

# Responses of the feed, in Redis (feed/cache.py): JSON, never pickle (the serializer passes the
# JSON bytes feed.cache makes through); a Redis that does not answer within a quarter second is
# skipped, not waited for; an entry larger than FEED_CACHE_MAX_ENTRY_BYTES is not stored, nor
# anything past FEED_CACHE_MAX_BYTES in a window (feed/cache.py).
FEED_CACHE_TTL = env_float("FEED_CACHE_TTL", 60.0)
FEED_CACHE_MAX_ENTRY_BYTES = env_int("FEED_CACHE_MAX_ENTRY_BYTES", 1024 * 1024)
# At most this much written per FEED_CACHE_TTL (so at most twice this held): 64 MiB.
FEED_CACHE_MAX_BYTES = env_int("FEED_CACHE_MAX_BYTES", 64 * 1024 * 1024)
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,  # noqa: F405
        "KEY_PREFIX": "api_feed",
        "TIMEOUT": FEED_CACHE_TTL,
        "OPTIONS": {
            "socket_connect_timeout": 0.25,
            "socket_timeout": 0.25,
            "serializer": "feed.cache.BytesOnlySerializer",
        },
    }
}

CELERY_TASK_DEFAULT_QUEUE = f"{CELERY_QUEUE_PREFIX}{SERVICE_NAME}.tasks"  # noqa: F405
# Celery's control (pidbox) and event traffic in exchanges of this service's own, not Celery's
# shared `celery.pidbox` / `celeryev`: one service's broker user then has no say over the other's
# workers (least privilege: CQRS.md#segurança).
CELERY_CONTROL_EXCHANGE = f"{CELERY_QUEUE_PREFIX}{SERVICE_NAME}"  # noqa: F405
CELERY_EVENT_EXCHANGE = CELERY_EVENT_QUEUE_PREFIX = f"{CELERY_CONTROL_EXCHANGE}.celeryev"
CELERY_TASK_QUEUES = task_queues(CELERY_TASK_DEFAULT_QUEUE, queue_type=CELERY_QUEUE_TYPE)  # noqa: F405
DEAD_LETTER_REPORT_EVERY = env_float("DEAD_LETTER_REPORT_EVERY", 60.0)
CELERY_BEAT_SCHEDULE = {
    "dead-letter-report": {
        "task": "replica.dead_letter_report",
        "schedule": DEAD_LETTER_REPORT_EVERY,
    },
}
