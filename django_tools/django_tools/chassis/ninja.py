"""django-ninja pieces both APIs share: the API factory with the JSON error format, bounded
pagination and the field types that keep bad input out of the database.

Every error leaves as `{"detail": ...}`; bad input answers 4xx, never 500; a database that cannot
be reached (down, restarting, refusing connections) answers 503 with `Retry-After`, never 500.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Annotated, Any

from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import Field, NinjaAPI, Schema
from ninja.errors import HttpError
from ninja.pagination import LimitOffsetPagination
from pydantic import (
    AfterValidator,
    BeforeValidator,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
)

from django_tools.chassis.errors import ConflictError
from django_tools.schemas import MAX_BIGINT, ErrorOut  # noqa: F401 - the APIs import them from here

logger = logging.getLogger(__name__)

#: The largest value of Django's PositiveIntegerField on every backend.
MAX_INT = 2**31 - 1


def _text(value: str) -> str:
    # PostgreSQL refuses NUL in text and no database can store a lone surrogate: both would
    # become a 500 deep in the driver, so they are rejected at the edge.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


#: No NUL anywhere, written so that the OpenAPI schema tells clients too.
NO_NUL = "^[^\\x00]*$"

#: A string that every database can store.
SafeStr = Annotated[str, StringConstraints(pattern=NO_NUL), AfterValidator(_text)]


#: Not only whitespace (nor NUL): what a stripped field with min_length 1 must contain, said in
#: the schema. `\s` differs between Python's re (which generates test data from the schema)
#: and the Rust regex that validates it; with \x1c-\x1f added the two sets are the same.
NOT_BLANK = "^[^\\x00]*[^\\s\\x00\\x1c-\\x1f][^\\x00]*$"


def text(*, min_length: int = 0, max_length: int | None = None, strip: bool = False) -> Any:
    """A SafeStr with length limits, checked after stripping when `strip` is set (then the
    schema's pattern says, too, that it cannot be blank)."""
    pattern = NOT_BLANK if strip and min_length >= 1 else NO_NUL
    return Annotated[
        str,
        StringConstraints(
            strip_whitespace=strip, min_length=min_length, max_length=max_length, pattern=pattern
        ),
        AfterValidator(_text),
    ]


def _json_integer(value: Any) -> Any:
    # JSON has numbers, not numeric strings or booleans: refuse what lax int parsing would
    # coerce, keep 5 and 5.0 (the same JSON Schema integer).
    if isinstance(value, (str, bytes, bool)):
        raise ValueError("must be a JSON integer")
    return value


def json_int(*, ge: int | None = None, le: int | None = None) -> Any:
    """An integer as JSON Schema means it: 5 or 5.0, not "5" or true."""
    return Annotated[int, Field(ge=ge, le=le), BeforeValidator(_json_integer)]


def no_negative_zero(value: Decimal) -> Decimal:
    """`-0` (which `Decimal("-0")`, `"-0.00"` and the JSON number `-0.0` all are) as `0`: it is
    ≥ 0, so it passes the bound, and would be served as "-0.00"."""
    return value.copy_abs() if value.is_zero() else value


#: A price: decimal ≥ 0 with two places; a JSON number or string on input, "19.90" on output
#: ("-0" in is 0; a -0 read from anywhere is served as "0.00").
Money = Annotated[
    Decimal,
    Field(ge=0, max_digits=12, decimal_places=2),
    AfterValidator(no_negative_zero),
    PlainSerializer(lambda value: f"{no_negative_zero(value):.2f}", return_type=str),
    # What the validator really accepts, so the schema promises no more than that.
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": 9999999999.99, "multipleOf": 0.01},
                {"type": "string", "pattern": r"^[0-9]{1,10}(\.[0-9]{1,2})?$", "maxLength": 13},
            ]
        },
        mode="validation",
    ),
]

#: A decimal bound in a query string (two places at most), e.g. `preco_min=10.5`.
DecimalParam = Annotated[
    Decimal,
    Field(max_digits=14, decimal_places=2),
    WithJsonSchema(
        {"type": "string", "pattern": r"^-?[0-9]{1,12}(\.[0-9]{1,2})?$", "maxLength": 16}
    ),
]

#: A primary key in a path.
PathId = Annotated[int, Field(ge=1, le=MAX_BIGINT)]


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """ninja's limit/offset pagination with an upper bound on `offset` (an unbounded offset
    overflows the database's integer and would answer 500)."""

    class Input(Schema):
        limit: int = Field(100, ge=1, le=1000)
        offset: int = Field(0, ge=0, le=10**12)


#: Seconds a client is told to wait (`Retry-After`) when the database cannot be reached.
DATABASE_RETRY_AFTER = 5


def build_api(*, title: str, version: str, description: str, **kwargs: Any) -> NinjaAPI:
    api = NinjaAPI(title=title, version=version, description=description, **kwargs)

    @api.exception_handler(HttpError)
    def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        status = exc.status_code
        if status == 400 and exc.__cause__ is not None:
            # ninja answers 400 for a body that is not JSON; to a client that is an invalid body.
            status = 422
        return api.create_response(request, {"detail": str(exc)}, status=status)

    def not_found(request: HttpRequest, exc: Exception) -> HttpResponse:
        return api.create_response(request, {"detail": "Not found"}, status=404)

    api.add_exception_handler(Http404, not_found)
    api.add_exception_handler(ObjectDoesNotExist, not_found)

    @api.exception_handler(ConflictError)
    def conflict(request: HttpRequest, exc: ConflictError) -> HttpResponse:
        return api.create_response(request, {"detail": str(exc)}, status=409)

    def database_unavailable(request: HttpRequest, exc: Exception) -> HttpResponse:
        # OperationalError: connection refused, server gone mid-request, too many clients, a
        # statement or lock timeout, SQLite's "database is locked"; InterfaceError: a connection
        # the server closed. Each is the database's state, not the request's fault: the client
        # may send the same request again. The message names no host, user or password.
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        logger.warning(
            "database unavailable on %s %s: %s: %s",
            request.method, request.path, type(exc).__name__, reason,
        )  # fmt: skip
        response = api.create_response(
            request, {"detail": "Database unavailable; try again shortly."}, status=503
        )
        response["Retry-After"] = str(DATABASE_RETRY_AFTER)
        return response

    api.add_exception_handler(OperationalError, database_unavailable)
    api.add_exception_handler(InterfaceError, database_unavailable)

    @api.exception_handler(DjangoValidationError)
    def invalid(request: HttpRequest, exc: DjangoValidationError) -> HttpResponse:
        detail = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        return api.create_response(request, {"detail": detail}, status=422)

    return api
