"""The feed's Redis cache of list and detail responses.

Keys carry the replica's version (`ReplicaState.version`, bumped in the same transaction as every
applied change, and its `incarnation`, new with every database), so once a change is committed
no request can be answered from an entry written before it: invalidation needs no message and
cannot be lost. A Redis that fails or is slow
(timeouts of a quarter second) turns the cache off for a few seconds and the feed answers from
the database — slower, never an error.

Values are JSON (orjson), never pickle: whoever can write to Redis must not be able to run code
in the feed. Django's `RedisCache` pickles whatever it is given, so the cache is configured with
`BytesOnlySerializer` (settings `CACHES`): this module encodes and decodes, and a value it cannot
read as JSON is a miss, logged, never executed.

Bounded, whatever the Redis is configured with: an entry larger than
`FEED_CACHE_MAX_ENTRY_BYTES` is not stored; every entry expires after `FEED_CACHE_TTL`; the keys
are a fixed-length digest of the query; and the feed writes at most `FEED_CACHE_MAX_BYTES` (each
entry's size plus a key's overhead) per `FEED_CACHE_TTL` window — counted in Redis, shared by
every process — so a flood of distinct queries (anyone can make them) holds at most twice that,
and at most that over `KEY_COST_BYTES` keys, however long it lasts; past the budget the feed
answers from the database until the next window. The Redis of docker-compose.yaml also caps its
memory (`maxmemory` + `allkeys-lru`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from django.conf import settings
from django.core.cache import cache

from django_tools.replica.models import ReplicaState
from feed.models import ProdutoMirror

logger = logging.getLogger(__name__)

#: After a failure, how long the feed does not even try Redis.
OUTAGE_PAUSE_SECONDS = 5.0
_paused_until = 0.0
#: What an entry costs Redis besides its value (its key, expiry and bookkeeping): counted
#: against FEED_CACHE_MAX_BYTES, so that the budget bounds the number of keys too.
KEY_COST_BYTES = 128
#: The last budget window this process said was spent (one warning per window).
_spent_window = -1


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
    hit = _decode(key, _call(cache.get, key))
    if hit is not None:
        return hit
    value = compute()
    encoded = orjson.dumps(value)
    if len(encoded) <= settings.FEED_CACHE_MAX_ENTRY_BYTES:
        _call(_store, key, encoded)
    return value


def _store(key: str, encoded: bytes) -> None:
    """Stores the entry if the window's budget allows it (module docstring)."""
    global _spent_window
    window_seconds = max(1.0, float(settings.FEED_CACHE_TTL))
    window = int(time.time() // window_seconds)
    counter = f"feed:budget:{window}"
    cost = len(encoded) + KEY_COST_BYTES
    try:
        spent = cache.incr(counter, cost)
    except ValueError:  # the window's first entry (the counter outlives it by one window)
        if cache.add(counter, str(cost).encode(), timeout=int(2 * window_seconds) + 1):
            spent = cost
        else:
            spent = cache.incr(counter, cost)  # another process started the window
    if spent > settings.FEED_CACHE_MAX_BYTES:
        if _spent_window != window:
            _spent_window = window
            logger.warning(
                "feed cache: FEED_CACHE_MAX_BYTES (%d) written in this %.0fs window; answering "
                "new queries from the database until the next one",
                settings.FEED_CACHE_MAX_BYTES,
                window_seconds,
            )
        return
    cache.set(key, encoded)


def _decode(key: str, raw: bytes | None) -> Any:
    """A cached value, or None (a miss) when there is none or it is not JSON — what someone
    else wrote into Redis is data to throw away, never code to run."""
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        logger.warning("feed cache: ignoring an unreadable value under %s (not JSON)", key)
        return None


class BytesOnlySerializer:
    """Django's RedisCache serializer for the feed: bytes in, bytes out (the JSON `cached`
    makes), where Django's default would pickle on the way in and unpickle on the way out."""

    def dumps(self, value: Any) -> bytes:
        if not isinstance(value, bytes):
            raise TypeError(f"the feed cache stores JSON bytes, not {type(value).__name__}")
        return value

    def loads(self, data: Any) -> bytes:
        return (
            bytes(data) if isinstance(data, bytes | bytearray | memoryview) else str(data).encode()
        )


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
