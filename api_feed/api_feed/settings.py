"""Settings of api_feed, the replica: consumes Produto events into ProdutoMirror."""

from pathlib import Path

from django_tools import cqrs
from django_tools.celery import celery_settings
from django_tools.env import env_float, load_service_env
from django_tools.settings import common_settings, django_apps

BASE_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = BASE_DIR.parent

load_service_env("feed", REPO_ROOT)
_common = common_settings(service="feed", base_dir=BASE_DIR, repo_root=REPO_ROOT)
globals().update(_common)

INSTALLED_APPS = django_apps("feed", cqrs_extensions=("django_tools.replica",))
ROOT_URLCONF = "api_feed.urls"
WSGI_APPLICATION = "api_feed.wsgi.application"

CQRS = cqrs.replica_settings(_common["RABBITMQ_URL"], default_queue="api_feed")

# Responses of the feed, in Redis (feed/cache.py); a Redis that does not answer within a quarter
# second is skipped, not waited for.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": _common["REDIS_URL"],
        "KEY_PREFIX": "api_feed",
        "TIMEOUT": env_float("FEED_CACHE_TTL", 60.0),
        "OPTIONS": {"socket_connect_timeout": 0.25, "socket_timeout": 0.25},
    }
}

globals().update(
    celery_settings(
        "feed",
        _common["RABBITMQ_URL"],
        _common["REDIS_URL"],
        beat_schedule={
            "dead-letter-report": {
                "task": "replica.dead_letter_report",
                "schedule": env_float("DEAD_LETTER_REPORT_EVERY", 60.0),
            },
        },
    )
)
