"""What the library's APIs (django_tools.replica.api) and the services' APIs
(django_tools.chassis.ninja) share: the JSON error body and the largest key a query may name."""

from __future__ import annotations

from typing import Any

from ninja import Schema

#: The largest value a 64-bit signed primary key (and SQLite's INTEGER) can hold.
MAX_BIGINT = 2**63 - 1


class ErrorOut(Schema):
    """Every error answer: `{"detail": ...}`."""

    detail: Any
