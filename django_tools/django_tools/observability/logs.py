"""Log formats: readable lines by default, one JSON object per line with `LOG_FORMAT=json`."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from django_tools.env import scrub

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class ScrubSecretsFilter(logging.Filter):
    """Every record's message, exception and stack as `env.scrub` leaves them: no password,
    key or URL credential reaches a log line, whoever logged it (our code, pika, Celery,
    Django) and whatever the exception says."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # Formatters reuse `exc_text` when it is set: the scrubbed traceback is what shows.
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, service, correlation_id and any
    `extra` fields."""

    def __init__(self, service: str | None = None) -> None:
        super().__init__()
        self._service = service

    @property
    def service(self) -> str:
        if self._service is None:
            from django.conf import settings

            self._service = getattr(settings, "SERVICE_NAME", "") if settings.configured else ""
        return self._service

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
        if record.exc_info or record.exc_text:
            # exc_text: the traceback as ScrubSecretsFilter left it.
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)
