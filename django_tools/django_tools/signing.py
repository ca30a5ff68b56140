"""Optional HMAC signatures on events, for deployments that share a broker (`CQRS_SIGNING_KEY`).

The broker's permissions decide who may publish to the `cqrs` exchange (CQRS.md#segurança); a
signature lets a replica tell the master's events from anyone else's that reached its queue
anyway — another tenant of a shared broker, a leaked credential of the replica's own user
(which may publish to its own queue through the default exchange, for its retries).

Unset (the default), nothing is signed nor checked: a stock django-cqrs master still works.
Set on both services, the relay adds `x-cqrs-signature: sha256=<hex HMAC-SHA256 of the body>`
to every event, and the replica dead-letters an event without it or with a wrong one (reason
`unauthenticated`). Several keys, comma-separated: events are signed with the first and
accepted with any, so a key is rotated without stopping anything (CQRS.md#segurança).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from django.conf import settings

from django_tools.replica.messages import PermanentFailure

HEADER = "x-cqrs-signature"
_SCHEME = "sha256="


class Unauthenticated(PermanentFailure):
    """An event without a valid signature on a replica that requires one."""


def keys() -> tuple[bytes, ...]:
    return tuple(key.encode() for key in getattr(settings, "CQRS_SIGNING_KEYS", ()))


def signature(body: bytes, key: bytes) -> str:
    return _SCHEME + hmac.new(key, body, hashlib.sha256).hexdigest()


def signed_headers(body: bytes, headers: dict[str, Any] | None) -> dict[str, Any] | None:
    """`headers` plus the body's signature with the first key (unchanged when unset)."""
    signing = keys()
    if not signing:
        return headers
    return {**(headers or {}), HEADER: signature(body, signing[0])}


def verify(body: bytes, headers: Mapping[str, Any] | None) -> None:
    """Raises Unauthenticated unless the body carries a signature of one of the keys (nothing
    to check when no key is set)."""
    accepted = keys()
    if not accepted:
        return
    value = (headers or {}).get(HEADER)
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("ascii", errors="replace")
    if not value:
        raise Unauthenticated(f"unsigned event ({HEADER} missing) and CQRS_SIGNING_KEY is set")
    if not any(hmac.compare_digest(str(value), signature(body, key)) for key in accepted):
        raise Unauthenticated(f"{HEADER} does not match the body with any CQRS_SIGNING_KEY")
