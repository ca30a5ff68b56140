"""django-cqrs's own retry settings of a replica (`CQRS['replica']`), as this replica honours
them: `CQRS_RETRY_DELAY` (stock: the wait before every retry) and `delay_queue_max_size`
(stock: how many retries a worker holds in memory, and so its prefetch). `CQRS_MAX_RETRIES`
is this replica's own limit already (`policy.RetryPolicy.from_settings`).

Only a setting the service wrote changes anything: django-cqrs fills in its defaults (2 s, 1000)
when it starts (its AppConfig.ready()), and those must leave this replica's backoff and
prefetch as they are. So what the service wrote is remembered before that (`remember`, from this
app's AppConfig, which Django creates before any app is ready); a `CQRS['replica']` put in
place later (a test's override) was never filled in, and a value there other than django-cqrs's
default was written by someone.
"""

from __future__ import annotations

import math
from typing import Any

from dj_cqrs.constants import DEFAULT_REPLICA_DELAY_QUEUE_MAX_SIZE, DEFAULT_REPLICA_RETRY_DELAY

RETRY_DELAY = "CQRS_RETRY_DELAY"
DELAY_QUEUE_MAX_SIZE = "delay_queue_max_size"
#: What django-cqrs fills in for each when the service's CQRS['replica'] lacks it.
STOCK_DEFAULTS = {
    RETRY_DELAY: DEFAULT_REPLICA_RETRY_DELAY,
    DELAY_QUEUE_MAX_SIZE: DEFAULT_REPLICA_DELAY_QUEUE_MAX_SIZE,
}
#: The shortest constant wait: `CQRS_RETRY_DELAY=0` (stock: retry at once) still goes through a
#: delay queue on the broker, whose TTL must be positive for the retry policy.
MIN_DELAY = 0.1

#: (the CQRS['replica'] dict the settings hold, the stock keys written in it), before
#: django-cqrs filled its defaults in.
_written: tuple[dict, frozenset[str]] | None = None


def remember(cqrs: Any) -> None:
    """Called once Django has the settings and before any app is ready: which of django-cqrs's
    retry settings the service wrote itself."""
    global _written
    replica = cqrs.get("replica") if isinstance(cqrs, dict) else None
    if isinstance(replica, dict):
        _written = (replica, frozenset(key for key in STOCK_DEFAULTS if key in replica))


def written(replica: dict) -> dict[str, Any]:
    """The stock retry settings the service set in `replica` (its CQRS['replica']), each with
    the value django-cqrs itself uses (an invalid one it has replaced by its default, and said
    so in the log)."""
    if _written is not None and _written[0] is replica:
        return {key: replica.get(key) for key in _written[1]}
    return {
        key: replica[key]
        for key, default in STOCK_DEFAULTS.items()
        if key in replica and replica[key] != default
    }


def constant_delay(replica: dict) -> float | None:
    """`CQRS_RETRY_DELAY`, when set: every retry waits that long (its tier is that wait), in
    place of the exponential backoff. None when unset or unusable (not a number ≥ 0)."""
    value = written(replica).get(RETRY_DELAY)
    if not _number(value) or value < 0:
        return None
    return max(float(value), MIN_DELAY)


def prefetch_cap(replica: dict) -> int | None:
    """`delay_queue_max_size=N`, when set: at most N + 1 unacknowledged messages per worker, as
    django-cqrs's consumer asks for (its prefetch count). None when unset, or None (stock: no
    bound; here the bound stays CQRS_PREFETCH and CQRS_PREFETCH_BYTES)."""
    value = written(replica).get(DELAY_QUEUE_MAX_SIZE)
    if not _number(value) or value <= 0:
        return None
    return int(value) + 1


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
