"""Log formats: readable lines by default, one JSON object per line with `LOG_FORMAT=json`."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from django_tools.env import env_str
from django_tools.observability.correlation import CorrelationFilter

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, service, correlation_id and any
    `extra` fields."""

    def __init__(self, service: str = "") -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": self.service,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def logging_settings(service: str) -> dict[str, Any]:
    level = env_str("LOG_LEVEL", "INFO").upper()
    as_json = env_str("LOG_FORMAT", "plain").lower() == "json"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"correlation": {"()": CorrelationFilter}},
        "formatters": {
            "plain": {
                "format": "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s"
            },
            "json": {"()": "django_tools.observability.logs.JsonFormatter", "service": service},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "json" if as_json else "plain",
                "filters": ["correlation"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # pika logs every connection step, and every failed one at ERROR; the code that uses
            # it logs what a failure means.
            "pika": {"level": "CRITICAL"},
            # Django's own request logger repeats what RequestIdMiddleware logs.
            "django.request": {"level": "ERROR"},
        },
    }
