"""An AMQP message body → a django-cqrs event, or the reason it can never be applied.

The body is django-cqrs's own `TransportPayload.to_dict()` JSON; nothing beyond it is required,
so a stock django-cqrs master can be followed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from typing import Any

import orjson
from dateutil.parser import parse as parse_datetime
from dj_cqrs.constants import SignalType
from django.conf import settings
from django.utils import timezone

from django_tools import limits

ENVELOPE_KEYS = ("instance_pk", "signal_type", "cqrs_id", "instance_data")
SIGNAL_TYPES = (SignalType.SAVE, SignalType.DELETE, SignalType.SYNC)


class PermanentFailure(Exception):
    """The message can never be applied as it is: it goes to the dead-letter queue at once."""


class InvalidMessage(PermanentFailure):
    """Not JSON, not an object, or without the keys every django-cqrs message has."""


class UnknownCqrsId(PermanentFailure):
    """No replica model of this service has the message's CQRS_ID."""


class InvalidData(PermanentFailure):
    """The instance data fails the replica model's validation."""


class ExpiredMessage(PermanentFailure):
    """The master gave the message an expiry (`CQRS_MESSAGE_TTL`) and it has passed."""


@dataclass(frozen=True)
class Event:
    cqrs_id: str
    signal_type: str
    instance_pk: Any
    revision: int
    data: dict[str, Any]
    correlation_id: str | None = None
    #: What a replica model's own hooks receive too (django-cqrs's `previous_data`, `meta`).
    previous_data: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None

    @property
    def is_delete(self) -> bool:
        return self.signal_type == SignalType.DELETE

    @property
    def is_sync(self) -> bool:
        return self.signal_type == SignalType.SYNC


def max_message_bytes() -> int:
    """CQRS_MAX_MESSAGE_BYTES: the largest body this replica applies."""
    replica = getattr(settings, "CQRS", {}).get("replica", {})
    return int(replica.get("max_message_bytes", limits.MAX_MESSAGE_BYTES))


def decode(body: bytes) -> Event:
    if len(body) > (limit := max_message_bytes()):
        # Not decoded: a body this size cannot hold a valid change of the replica's models, and
        # a JSON parse of it costs memory several times its size.
        raise InvalidMessage(
            f"body of {len(body)} bytes is larger than CQRS_MAX_MESSAGE_BYTES ({limit})"
        )
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage(f"body is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise InvalidMessage(f"body is a JSON {type(message).__name__}, not an object")
    missing = [key for key in ENVELOPE_KEYS if key not in message]
    if missing:
        raise InvalidMessage(f"body lacks {', '.join(missing)}")
    signal_type, data = message["signal_type"], message["instance_data"]
    if signal_type not in SIGNAL_TYPES:
        raise InvalidMessage(f"unknown signal_type {signal_type!r}")
    if not isinstance(data, dict):
        raise InvalidMessage("instance_data is not an object")
    revision = data.get("cqrs_revision")
    if type(revision) is not int or revision < 0:
        raise InvalidMessage(f"instance_data.cqrs_revision is {revision!r}, not an integer >= 0")
    if "cqrs_updated" not in data:
        raise InvalidMessage("instance_data lacks cqrs_updated")
    _check_expiry(message.get("expires"))
    return Event(
        cqrs_id=str(message["cqrs_id"]),
        signal_type=signal_type,
        instance_pk=message["instance_pk"],
        revision=revision,
        data=data,
        correlation_id=message.get("correlation_id"),
        previous_data=_dict_or_none(message.get("previous_data")),
        meta=_dict_or_none(message.get("meta")),
    )


def _dict_or_none(value: Any) -> dict | None:
    return value if isinstance(value, dict) else None


def _check_expiry(expires: Any) -> None:
    if not expires:
        return
    try:
        moment = parse_datetime(expires)
    except (TypeError, ValueError, OverflowError):
        raise InvalidMessage(f"expires is not a date: {expires!r}") from None
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=UTC)
    if moment <= timezone.now():
        raise ExpiredMessage(f"expired at {expires}")
