"""Where a failure goes: the one place where a failed message is classified (`classify`), and
where its copy for a retry queue or the dead-letter queue is made (`failed_copy`) and sent
(`publish_copy`), for the consumer (cqrs mode) and the Celery task (celery mode) alike.

The body is never touched (it stays django-cqrs's own JSON, readable by stock tools); the
`x-cqrs-*` headers tell a retry or a dead letter's story: error class and message, retries done,
first and last failure times, the routing key it was first delivered with and why it was
dead-lettered. A dead letter sent back for another go (`fresh_properties`) keeps its first failure
and its identity (`x-cqrs-letter-id`): if it fails again, it comes back as the same letter, with
its history, not as a new one.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

import orjson
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Model
from django.utils import timezone
from pika import BasicProperties

from django_tools.amqp_properties import undecodable
from django_tools.replica import metrics
from django_tools.replica.hooks import retry_hooks
from django_tools.replica.messages import PermanentFailure
from django_tools.replica.policy import RetryPolicy
from django_tools.replica.topology import Topology
from django_tools.signing import Unauthenticated

logger = logging.getLogger("django_tools.replica")

RETRIES = "x-cqrs-retries"
ERROR_CLASS = "x-cqrs-error-class"
ERROR = "x-cqrs-error"
FIRST_FAILURE = "x-cqrs-first-failure"
LAST_FAILURE = "x-cqrs-last-failure"
ORIGINAL_ROUTING_KEY = "x-cqrs-original-routing-key"
DEAD_REASON = "x-cqrs-dead-reason"
#: The identity a dead letter had when it was sent back for another go (dead_letters.letter_id):
#: if it dies again, the page and the command show it under the same id.
LETTER_ID = "x-cqrs-letter-id"
#: How many deliveries of a message set aside as `redelivered` ended without it being done.
DELIVERIES = "x-cqrs-deliveries"
#: The broker's count of a message's earlier deliveries (quorum queues): its own, never copied.
DELIVERY_COUNT = "x-delivery-count"
#: The encoded properties of a message whose headers could not be decoded (raw bytes).
UNDECODABLE_PROPERTIES = "x-cqrs-undecodable-properties"
OUR_HEADERS = (
    UNDECODABLE_PROPERTIES,
    RETRIES,
    ERROR_CLASS,
    ERROR,
    FIRST_FAILURE,
    LAST_FAILURE,
    ORIGINAL_ROUTING_KEY,
    DEAD_REASON,
    DELIVERIES,
    LETTER_ID,
)
#: Ours, and kept on a dead letter sent back for another go: its history across retries.
KEPT_ON_RETRY = frozenset({FIRST_FAILURE, LETTER_ID})

#: Why a message is in the dead-letter queue.
PERMANENT = "permanent"  # can never be applied as it is
EXHAUSTED = "retries-exhausted"  # kept failing for a transient reason
UNDECODABLE = "undecodable"  # its AMQP properties could not be decoded; the body is kept
UNAUTHENTICATED = "unauthenticated"  # unsigned or badly signed, CQRS_SIGNING_KEY set
REDELIVERED = "redelivered"  # every worker that handled it died (see `probation`)
REFUSED = "model-refused-retry"  # its replica model's should_retry_cqrs() said no
DEAD_REASONS = (PERMANENT, EXHAUSTED, UNDECODABLE, UNAUTHENTICATED, REDELIVERED, REFUSED)

#: Headers the broker writes (dead-lettering history, a quorum queue's delivery counters): a
#: letter sent back for another go must not carry them, or its stale count would read as the
#: broker's own.
BROKER_HEADERS = frozenset({"x-death", DELIVERY_COUNT, "x-acquired-count"})


class UndecodableMessage(PermanentFailure):
    """The message's AMQP properties (its headers) could not be decoded."""


class CrashLooping(PermanentFailure):
    """The message was delivered again and again and every worker that handled it died before
    it was done (see `probation`): set aside unread, so it cannot kill another."""


# --- the one place where a failure is classified ------------------------------------------


@dataclass(frozen=True)
class Retry:
    """Try again: retry number `retry` (1-based), after `delay` seconds, through the retry
    queue of `tier` (the policy's tier of that retry, unless the model asked for a wait)."""

    retry: int
    delay: float
    tier: float


@dataclass(frozen=True)
class SetAside:
    """Give up: set the message aside to the dead-letter queue, with `reason` (one of
    `DEAD_REASONS`). A decision; a letter read back from that queue is
    `dead_letters.DeadLetter`."""

    reason: str


def classify(
    error: BaseException,
    retries: int,
    policy: RetryPolicy,
    *,
    validating: bool = False,
    rng: random.Random | None = None,
    model: type[Model] | None = None,
) -> Retry | SetAside:
    """What to do with a message that failed with `error` after `retries` retries.

    - `CrashLooping` (each worker that handled it died): dead letter as `redelivered`.
    - `PermanentFailure` (undecodable, not a django-cqrs event, invalid data, unknown CQRS_ID,
      expired, unsigned or badly signed): dead letter at once; retrying cannot change the
      outcome.
    - Any other error while *validating* (`validating=True`: decoding the body and checking it
      against the replica model, no database involved) is permanent too: validation is a pure
      function of the message, a `TypeError` there fails again on every retry. Except a
      misconfigured replica model (`ImproperlyConfigured`), which a deploy fixes.
    - Anything else (database errors, lock timeouts, lost connections, unknown errors while
      applying): retried with backoff, dead-lettered as `retries-exhausted` after the last retry.

    `model`, the replica model the message is for (known once it is validated), may override
    django-cqrs's retry hooks (`hooks.retry_hooks`), asked only about a failure that would be
    retried, with the retries done so far (django-cqrs's `current_retry`):
    `should_retry_cqrs(current_retry, exception)` False dead-letters it at once as
    `model-refused-retry` (True: the policy goes on, CQRS_MAX_RETRIES still the limit);
    `get_cqrs_retry_delay(current_retry)` seconds send the retry through the shortest tier at
    or above them (the longest beyond them all), waiting that tier. A hook that raises or
    answers nonsense is logged and the policy decides.
    """
    if isinstance(error, UndecodableMessage):
        return SetAside(UNDECODABLE)
    if isinstance(error, Unauthenticated):
        return SetAside(UNAUTHENTICATED)
    if isinstance(error, CrashLooping):
        return SetAside(REDELIVERED)
    if isinstance(error, PermanentFailure):
        return SetAside(PERMANENT)
    if validating and not isinstance(error, ImproperlyConfigured):
        return SetAside(PERMANENT)
    if retries >= policy.max_retries:
        # Before the model's hook: one that calls django-cqrs's (CQRS_MAX_RETRIES) would say
        # no here, and the letter would read as refused by the model.
        return SetAside(EXHAUSTED)
    hooks = retry_hooks(model)
    if hooks.should_retry is not None and not _model_retries(hooks.should_retry, retries, error):
        return SetAside(REFUSED)
    asked = None if hooks.retry_delay is None else _model_delay(hooks.retry_delay, retries)
    if asked is not None:
        tier = policy.tier_at_least(asked)
        return Retry(retries + 1, tier, tier)
    return Retry(retries + 1, policy.delay(retries + 1, rng), policy.tier(retries + 1))


def _model_retries(hook, retries: int, error: BaseException) -> bool:
    try:
        return bool(hook(retries, error))
    except Exception:
        # A broken hook must not stop the consumer (the message would come back forever):
        # the policy decides, as for a model without the hook.
        logger.exception("should_retry_cqrs(%s, %r) raised: retrying as the policy says",
                         retries, error)  # fmt: skip
        return True


def _model_delay(hook, retries: int) -> float | None:
    try:
        delay = hook(retries)
    except Exception:
        logger.exception("get_cqrs_retry_delay(%s) raised: the policy's wait instead", retries)
        return None
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not delay >= 0:
        logger.error("get_cqrs_retry_delay(%s) returned %r, not seconds >= 0: the policy's wait "
                     "instead", retries, delay)  # fmt: skip
        return None
    return float(delay)


# --- the copy that goes to a retry queue or the dead-letter queue --------------------------


@dataclass(frozen=True)
class FailedCopy:
    queue: str
    properties: BasicProperties
    description: str  # for the log line


def failed_copy(
    decision: Retry | SetAside,
    error: BaseException,
    *,
    topology: Topology,
    properties: BasicProperties | None,
    routing_key: str,
    retries: int,
    deliveries: int | None = None,
) -> FailedCopy:
    """The copy of a failed message `decision` sends somewhere (counted in the metrics);
    `deliveries`, for a message set aside as `redelivered`, how many times it was delivered
    without being done."""
    what = f"{type(error).__name__}: {error}"
    if isinstance(decision, SetAside):
        metrics.EVENTS_DEAD.labels(decision.reason).inc()
        return FailedCopy(
            queue=topology.dead_letter_queue,
            properties=failed_properties(
                properties,
                routing_key,
                error,
                retries=retries,
                dead_reason=decision.reason,
                deliveries=deliveries,
            ),
            description=f"dead-lettered ({decision.reason}) after {what}",
        )
    metrics.EVENTS_RETRIED.inc()
    return FailedCopy(
        queue=topology.retry_queue(decision.tier),
        properties=failed_properties(
            properties,
            routing_key,
            error,
            retries=decision.retry,
            expiration_ms=int(decision.delay * 1000),
        ),
        description=f"retry {decision.retry}/{topology.policy.max_retries} in "
        f"{decision.delay:.2f}s after {what}",
    )


def publish_copy(channel, copy: FailedCopy, body: bytes) -> None:
    """On a channel in confirm mode: returns once the broker has the copy, so the original can
    be acknowledged."""
    channel.basic_publish(
        exchange="", routing_key=copy.queue, body=body, properties=copy.properties, mandatory=True
    )


# --- the headers a failed copy carries ----------------------------------------------------


MAX_ERROR_LENGTH = 2000


def delivery_count(properties: BasicProperties | None) -> int | None:
    """The broker's count of the message's earlier deliveries (`x-delivery-count`, set by
    quorum queues on a message given back), None where the broker keeps none (classic)."""
    headers = (properties.headers if properties else None) or {}
    try:
        count = headers.get(DELIVERY_COUNT)
        return None if count is None else max(0, int(count))
    except (TypeError, ValueError, OverflowError):
        return None


def retries_of(properties: BasicProperties | None) -> int:
    headers = (properties.headers if properties else None) or {}
    try:
        return max(0, int(headers.get(RETRIES, 0)))
    except (TypeError, ValueError, OverflowError):
        return 0


def failed_properties(
    properties: BasicProperties | None,
    routing_key: str,
    error: BaseException,
    retries: int,
    dead_reason: str | None = None,
    expiration_ms: int | None = None,
    deliveries: int | None = None,
) -> BasicProperties:
    """The properties of the copy that goes to a retry queue or the dead-letter queue."""
    headers = dict((properties.headers if properties else None) or {})
    # The broker's count of the original's deliveries is not the copy's: carried along, it
    # would put a retry that comes back on probation as if it had been redelivered.
    headers.pop(DELIVERY_COUNT, None)
    if undecodable(properties):
        headers[UNDECODABLE_PROPERTIES] = properties.raw
    now = timezone.now().isoformat()
    headers.setdefault(FIRST_FAILURE, now)
    headers.setdefault(ORIGINAL_ROUTING_KEY, routing_key)
    headers[LAST_FAILURE] = now
    headers[RETRIES] = retries
    headers[ERROR_CLASS] = f"{type(error).__module__}.{type(error).__qualname__}"
    headers[ERROR] = (str(error) or repr(error))[:MAX_ERROR_LENGTH]
    if dead_reason:
        headers[DEAD_REASON] = dead_reason
    if deliveries is not None:
        headers[DELIVERIES] = deliveries
    return BasicProperties(
        content_type=(properties.content_type if properties else None) or "text/plain",
        delivery_mode=2,
        correlation_id=properties.correlation_id if properties else None,
        message_id=properties.message_id if properties else None,
        headers=headers,
        expiration=str(expiration_ms) if expiration_ms is not None else None,
    )


def fresh_properties(
    properties: BasicProperties | None, letter_id: str | None = None
) -> BasicProperties:
    """Properties of a dead letter sent back for another go: our headers dropped, so its
    retries start again from zero, except its first failure and its identity (`letter_id`,
    the one the operator saw): failing again, it is the same letter, its first failure kept."""
    headers = {
        k: v for k, v in ((properties.headers if properties else None) or {}).items()
        if (k not in OUR_HEADERS or k in KEPT_ON_RETRY) and k not in BROKER_HEADERS
    }  # fmt: skip
    if letter_id:
        headers[LETTER_ID] = letter_id
    return BasicProperties(
        content_type=(properties.content_type if properties else None) or "text/plain",
        delivery_mode=2,
        correlation_id=properties.correlation_id if properties else None,
        message_id=properties.message_id if properties else None,
        headers=headers or None,
    )


@dataclass(frozen=True)
class FailureReport:
    """A dead letter as `cqrs_dead_letters dump --detail` shows it (plain `dump` prints the body
    only, as django-cqrs's own command does)."""

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
    """A header value as text, whatever its type: a dead letter with a header that is not
    UTF-8 (or not a string at all) must never make the others unreadable."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="backslashreplace")
    return str(value)
