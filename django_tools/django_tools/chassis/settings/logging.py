"""Logs: readable lines by default, one JSON object per line with `LOG_FORMAT=json`."""

from __future__ import annotations

from django_tools.env import env_str

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
LOG_FORMAT = env_str("LOG_FORMAT", "plain").lower()

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "correlation": {"()": "django_tools.observability.correlation.CorrelationFilter"},
        # No secret in a log line: URLs, passwords and keys masked (django_tools.env.scrub).
        "scrub": {"()": "django_tools.observability.logs.ScrubSecretsFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s"},
        "json": {"()": "django_tools.observability.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            "filters": ["correlation", "scrub"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # pika logs every connection step, and every failed one at ERROR; the code that uses it
        # logs what a failure means.
        "pika": {"level": "CRITICAL"},
        # Django's own request logger repeats what RequestIdMiddleware logs.
        "django.request": {"level": "ERROR"},
    },
}
