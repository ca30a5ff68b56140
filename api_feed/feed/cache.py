"""The feed's Redis cache of list and detail responses.

Keys carry the replica's version (`ReplicaState.version`, bumped in the same transaction as every
applied change, and its `incarnation`, new with every database), so once a change is committed
no request can be answered from an entry written before it: invalidation needs no message and
cannot be lost. A Redis that fails or is slow
(timeouts of a quarter second) turns the cache off for a few seconds and the feed answers from
the database — slower, never an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from django.core.cache import cache

from django_tools.replica.models import ReplicaState
from feed.models import ProdutoMirror

logger = logging.getLogger(__name__)

#: After a failure, how long the feed does not even try Redis.
OUTAGE_PAUSE_SECONDS = 5.0
_paused_until = 0.0


def replica_version() -> str | None:
    """Changes with every applied change, and with every new replica database; None before the
    first applied change."""
    state = (
        ReplicaState.objects.filter(cqrs_id=ProdutoMirror.CQRS_ID)
        .values_list("incarnation", "version")
        .first()
    )
    return f"{state[0]}.{state[1]}" if state else None


def cached(kind: str, params: dict[str, Any], compute: Callable[[], Any]) -> Any:
    digest = hashlib.blake2b(
        json.dumps(params, sort_keys=True, default=str).encode(), digest_size=10
    ).hexdigest()
    version = replica_version()
    if version is None:
        # Nothing applied yet, so no incarnation to key on. A shared placeholder key would be
        # filled by whichever database first read rows here (a consumer may commit its first
        # change between the version read and the rows read) and then served to every new one.
        return compute()
    key = f"feed:{kind}:{version}:{digest}"
    hit = _call(cache.get, key)
    if hit is not None:
        return hit
    value = compute()
    _call(cache.set, key, value)
    return value


def _call(operation: Callable, *args: Any) -> Any:
    global _paused_until
    if time.monotonic() < _paused_until:
        return None
    try:
        return operation(*args)
    except Exception as exc:
        _paused_until = time.monotonic() + OUTAGE_PAUSE_SECONDS
        logger.warning(
            "feed cache unavailable (%s); answering from the database for %.0fs",
            exc.__class__.__name__,
            OUTAGE_PAUSE_SECONDS,
        )
        return None
