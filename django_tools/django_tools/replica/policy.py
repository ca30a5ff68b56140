"""Retry policy of the replica: exponential backoff with jitter and a cap.

Retry n (1-based) waits `min(cap, base * factor**(n-1))`, shortened by up to `jitter` of itself
at random, so that messages that failed together do not come back together. A message that has
failed `max_retries + 1` times goes to the dead-letter queue.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from django_tools.replica.stock_retry import constant_delay


@dataclass(frozen=True)
class RetryPolicy:
    base: float = 1.0
    factor: float = 2.0
    cap: float = 300.0
    max_retries: int = 12
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.base <= 0 or self.factor < 1 or self.cap < self.base:
            raise ValueError(
                f"invalid retry policy {self}: need base > 0, factor >= 1, cap >= base"
            )
        if not 0 <= self.jitter < 1 or self.max_retries < 0:
            raise ValueError(f"invalid retry policy {self}: need 0 <= jitter < 1, max_retries >= 0")

    def tier(self, retry: int) -> float:
        """The longest wait before retry number `retry` (1-based)."""
        return min(self.cap, self.base * self.factor ** (retry - 1))

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        tier = self.tier(retry)
        return tier * (1 - self.jitter * (rng or random).random())

    def tiers(self) -> list[float]:
        """Distinct tier delays, one RabbitMQ delay queue each."""
        return sorted({self.tier(n) for n in range(1, self.max_retries + 1)})

    def schedule(self) -> list[float]:
        return [self.tier(n) for n in range(1, self.max_retries + 1)]

    def tier_at_least(self, delay: float) -> float:
        """The tier a wait of `delay` seconds asked for goes through (a replica model's
        `get_cqrs_retry_delay`): the shortest tier at or above it, the longest beyond them all.
        Tiers are fixed queues on the broker (declared up front, one TTL each), so an asked
        wait is rounded up to one of them, never shortened."""
        tiers = self.tiers() or [self.base]
        return next((tier for tier in tiers if tier >= delay), tiers[-1])

    @classmethod
    def from_settings(cls, replica: dict[str, Any]) -> RetryPolicy:
        """From CQRS['replica']: this replica's `retry_*` and `CQRS_MAX_RETRIES`, or, when the
        service set django-cqrs's own `CQRS_RETRY_DELAY`, that constant wait before every retry
        (one tier; `retry_jitter` still shortens it, 0 for the exact wait)."""
        max_retries = replica.get("CQRS_MAX_RETRIES")
        base = float(replica.get("retry_base", cls.base))
        factor = float(replica.get("retry_factor", cls.factor))
        cap = float(replica.get("retry_cap", cls.cap))
        constant = constant_delay(replica)
        if constant is not None:
            base, factor, cap = constant, 1.0, constant
        return cls(
            base=base,
            factor=factor,
            cap=cap,
            max_retries=cls.max_retries if max_retries is None else int(max_retries),
            jitter=float(replica.get("retry_jitter", cls.jitter)),
        )


def format_seconds(seconds: float) -> str:
    """`1s`, `0.25s`, `300s`: the suffix of a tier queue's name."""
    return f"{seconds:g}s"
