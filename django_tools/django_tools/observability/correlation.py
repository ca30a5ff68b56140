"""One id follows a change: the REST request (`X-Request-ID`, or a new one), the outbox row, the
AMQP message (django-cqrs's `correlation_id`) and the replica's apply, in every log line."""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

HEADER = "X-Request-ID"
_VALID = re.compile(r"^[A-Za-z0-9._:/+=@-]{1,128}$")

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "correlation_id", default=None
)
logger = logging.getLogger("django_tools.requests")


def current() -> str | None:
    return _current.get()


def activate(correlation_id: str | None) -> contextvars.Token:
    return _current.set(correlation_id)


def deactivate(token: contextvars.Token) -> None:
    _current.reset(token)


def cqrs_correlation_function(signal_type, cqrs_id, instance_pk, queue) -> str | None:
    """django-cqrs's `master.correlation_function`: the id of the request making the change."""
    return current()


def request_id_from(request: HttpRequest) -> str:
    """The client's X-Request-ID when it is a sane token, else a new one."""
    given = request.headers.get(HEADER, "")
    return given if _VALID.match(given) else uuid.uuid4().hex


class RequestIdMiddleware:
    """Activates the request's id for everything the request does, answers it back in
    `X-Request-ID`, and logs one line per request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = request_id_from(request)
        token = activate(request_id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response[HEADER] = request_id
            logger.info(
                "%s %s %s %.1fms",
                request.method,
                request.path,
                response.status_code,
                (time.perf_counter() - started) * 1000,
            )
            return response
        finally:
            deactivate(token)


class CorrelationFilter(logging.Filter):
    """Gives every log record a `correlation_id` (the active one, unless the call passed its
    own in `extra`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "correlation_id", None):
            record.correlation_id = current() or "-"
        return True
