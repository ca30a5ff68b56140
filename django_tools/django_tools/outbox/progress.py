"""Is the outbox moving? What `/health`, `/api/outbox/status` and `outbox_relay_health` say about
the relay, from the database alone (any process of the master can tell, on any machine).

Stalled: rows wait — the oldest for longer than `stall_after` (CQRS_STALL_AFTER) — and nothing
was published for that long either. A relay keeping up with a steady stream always has rows a
few milliseconds old, never old ones; one that is paused, cut from the broker, or cannot get
confirms lets them age. A relay that reconnects within the window is not stalled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings

from django_tools.outbox.selectors import Backlog, outbox_backlog

DEFAULT_STALL_AFTER = 20.0


def stall_after() -> float:
    return float(getattr(settings, "CQRS_STALL_AFTER", DEFAULT_STALL_AFTER))


@dataclass(frozen=True)
class RelayProgress:
    backlog: Backlog
    #: Seconds since the last row was published (by any relay), None when never.
    since_published: float | None
    stall_after: float
    stalled: bool
    detail: str | None


def relay_progress(
    limit: float | None = None, last_confirmed_at: float | None = None
) -> RelayProgress:
    """The outbox's progress; `last_confirmed_at` (a relay's own, from its heartbeat) counts as
    a publish too."""
    limit = stall_after() if limit is None else limit
    backlog = outbox_backlog()
    published = [last_confirmed_at]
    if backlog.last_published_at is not None:
        published.append(backlog.last_published_at.timestamp())
    last = max((t for t in published if t), default=None)
    since = None if last is None else max(0.0, time.time() - last)
    oldest = backlog.oldest_age_seconds
    stalled = bool(backlog.count) and oldest > limit and (since is None or since > limit)
    detail = None
    if stalled:
        nothing = (
            "nothing confirmed yet" if since is None else f"nothing confirmed for {since:.0f}s"
        )
        detail = (
            f"the outbox is stuck: {backlog.count} rows unpublished, the oldest {oldest:.0f}s "
            f"old, {nothing}"
        )
    return RelayProgress(backlog, since, limit, stalled, detail)
