"""What a failed message carries with it: the reason it failed, in AMQP headers.

The body is never touched (it stays django-cqrs's own JSON, readable by stock tools); the
`x-cqrs-*` headers tell a retry or a dead letter's story: error class and message, retries done,
first and last failure times, the routing key it was first delivered with and why it was
dead-lettered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from django.utils import timezone
from pika import BasicProperties

RETRIES = "x-cqrs-retries"
ERROR_CLASS = "x-cqrs-error-class"
ERROR = "x-cqrs-error"
FIRST_FAILURE = "x-cqrs-first-failure"
LAST_FAILURE = "x-cqrs-last-failure"
ORIGINAL_ROUTING_KEY = "x-cqrs-original-routing-key"
DEAD_REASON = "x-cqrs-dead-reason"
OUR_HEADERS = (
    RETRIES,
    ERROR_CLASS,
    ERROR,
    FIRST_FAILURE,
    LAST_FAILURE,
    ORIGINAL_ROUTING_KEY,
    DEAD_REASON,
)

#: Why a message is in the dead-letter queue.
PERMANENT = "permanent"  # can never be applied as it is
EXHAUSTED = "retries-exhausted"  # kept failing for a transient reason

MAX_ERROR_LENGTH = 2000


def retries_of(properties: BasicProperties | None) -> int:
    headers = (properties.headers if properties else None) or {}
    try:
        return max(0, int(headers.get(RETRIES, 0)))
    except (TypeError, ValueError):
        return 0


def failed_properties(
    properties: BasicProperties | None,
    routing_key: str,
    error: BaseException,
    retries: int,
    dead_reason: str | None = None,
    expiration_ms: int | None = None,
) -> BasicProperties:
    """The properties of the copy that goes to a retry queue or the dead-letter queue."""
    headers = dict((properties.headers if properties else None) or {})
    now = timezone.now().isoformat()
    headers.setdefault(FIRST_FAILURE, now)
    headers.setdefault(ORIGINAL_ROUTING_KEY, routing_key)
    headers[LAST_FAILURE] = now
    headers[RETRIES] = retries
    headers[ERROR_CLASS] = f"{type(error).__module__}.{type(error).__qualname__}"
    headers[ERROR] = (str(error) or repr(error))[:MAX_ERROR_LENGTH]
    if dead_reason:
        headers[DEAD_REASON] = dead_reason
    return BasicProperties(
        content_type=(properties.content_type if properties else None) or "text/plain",
        delivery_mode=2,
        correlation_id=properties.correlation_id if properties else None,
        message_id=properties.message_id if properties else None,
        headers=headers,
        expiration=str(expiration_ms) if expiration_ms is not None else None,
    )


def fresh_properties(properties: BasicProperties | None) -> BasicProperties:
    """Properties of a dead letter sent back for another go: our headers dropped, so its
    retries start again from zero."""
    headers = {
        k: v for k, v in ((properties.headers if properties else None) or {}).items()
        if k not in OUR_HEADERS and k != "x-death"
    }  # fmt: skip
    return BasicProperties(
        content_type=(properties.content_type if properties else None) or "text/plain",
        delivery_mode=2,
        correlation_id=properties.correlation_id if properties else None,
        message_id=properties.message_id if properties else None,
        headers=headers or None,
    )


@dataclass(frozen=True)
class FailureReport:
    """A dead letter as `cqrs_dead_letters dump` shows it."""

    routing_key: str | None
    dead_reason: str | None
    error_class: str | None
    error: str | None
    retries: int
    first_failure: str | None
    last_failure: str | None
    payload: Any

    @classmethod
    def read(cls, properties: BasicProperties, routing_key: str, body: bytes) -> FailureReport:
        headers = properties.headers or {}
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            payload = body.decode("utf-8", errors="replace")
        return cls(
            routing_key=_text(headers.get(ORIGINAL_ROUTING_KEY)) or routing_key,
            dead_reason=_text(headers.get(DEAD_REASON)),
            error_class=_text(headers.get(ERROR_CLASS)),
            error=_text(headers.get(ERROR)),
            retries=retries_of(properties),
            first_failure=_text(headers.get(FIRST_FAILURE)),
            last_failure=_text(headers.get(LAST_FAILURE)),
            payload=payload,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "routing_key": self.routing_key,
            "dead_reason": self.dead_reason,
            "error_class": self.error_class,
            "error": self.error,
            "retries": self.retries,
            "first_failure": self.first_failure,
            "last_failure": self.last_failure,
            "payload": self.payload,
        }


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
