"""api_feed's `manage.py subscribe` under django-outbox-pattern (lab only): the replica's
settings plus the library (its `Received` table)."""

from api_feed.settings import *  # noqa: F403
from apis_lab.peers.outbox_pattern_options import outbox_pattern_settings

INSTALLED_APPS = [*INSTALLED_APPS, "django_outbox_pattern"]  # noqa: F405
DJANGO_OUTBOX_PATTERN = outbox_pattern_settings(RABBITMQ_URL)  # noqa: F405
# The library keeps a once-a-day cleanup flag in Django's cache; the feed's Redis cache stores
# JSON bytes only (feed.cache), so this process keeps its own in memory.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
