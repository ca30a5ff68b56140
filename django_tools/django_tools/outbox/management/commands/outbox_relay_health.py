"""`outbox_relay_health`: can the relay make progress? For an orchestrator's health check (the
relay has no HTTP): exit 0 with one line on stdout, or 1 with one line on stderr saying why.

Healthy means: the relay's heartbeat (`django_tools.heartbeat`) is fresh, from a live process,
and says `publishing` or `standby`; and the outbox is not stuck: no unpublished row is older
than `--max-age` seconds unless something was confirmed within that window (a relay that keeps
up with a steady stream of writes always has rows of a few milliseconds, never old ones).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from django.core.management.base import BaseCommand
from django.db import DatabaseError

from django_tools.heartbeat import RELAY_FILE, STALE_AFTER, Pulse, heartbeat_dir, read

WORKING = ("publishing", "standby")


class Command(BaseCommand):
    help = (
        "Exit 0 when the outbox relay is making progress (fresh heartbeat, publishing or "
        "standby, no stuck backlog); exit 1 with one line saying why otherwise."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--max-age",
            type=float,
            default=60.0,
            help="seconds an unpublished row may wait while nothing is confirmed (default 60)",
        )
        parser.add_argument(
            "--stale-after",
            type=float,
            default=STALE_AFTER,
            help=f"seconds after which a heartbeat is stale (default {STALE_AFTER:.0f})",
        )

    def handle(self, *args, max_age: float, stale_after: float, **options) -> None:
        path = heartbeat_dir() / RELAY_FILE
        problem, summary = check(path, read(path), max_age=max_age, stale_after=stale_after)
        if problem:
            self.stderr.write(f"outbox relay unhealthy: {problem}")
            sys.exit(1)
        self.stdout.write(f"outbox relay ok: {summary}")


def check(
    path: Path, pulse: Pulse | None, *, max_age: float, stale_after: float
) -> tuple[str | None, str]:
    """(the problem, or None; a summary when there is none)."""
    if pulse is None:
        return (
            f"no heartbeat at {path}: is `manage.py outbox_relay` running, with the same "
            "HEARTBEAT_DIR?",
            "",
        )
    if not pulse.alive():
        return f"the relay (pid {pulse.pid}) is gone; last heartbeat {pulse.age:.0f}s ago", ""
    if pulse.age > stale_after:
        return (
            f"the relay (pid {pulse.pid}) has not beaten for {pulse.age:.0f}s "
            f"(limit {stale_after:.0f}s): it is stuck",
            "",
        )
    if pulse.state not in WORKING:
        if pulse.state == "disconnected":
            return (
                f"the relay (pid {pulse.pid}) cannot reach the broker "
                f"({pulse.get('reconnects', 0)} reconnects so far)",
                "",
            )
        return f"the relay (pid {pulse.pid}) is {pulse.state}", ""

    from django_tools.outbox.selectors import outbox_backlog

    try:
        backlog = outbox_backlog()
    except DatabaseError as exc:
        return f"cannot read the outbox: {str(exc).strip() or type(exc).__name__}", ""
    confirmed = [pulse.get("last_confirmed_at")]
    if backlog.last_published_at is not None:  # by this relay or by another (a standby's view)
        confirmed.append(backlog.last_published_at.timestamp())
    last = max((t for t in confirmed if t), default=None)
    since = None if last is None else max(0.0, time.time() - last)
    oldest = backlog.oldest_age_seconds
    if backlog.count and oldest > max_age and (since is None or since > max_age):
        nothing = (
            "nothing confirmed yet" if since is None else f"nothing confirmed for {since:.0f}s"
        )
        return (
            f"the outbox is stuck: {backlog.count} rows unpublished, the oldest {oldest:.0f}s "
            f"old, {nothing} (relay pid {pulse.pid}, {pulse.state})",
            "",
        )
    summary = (
        f"{pulse.state} (pid {pulse.pid}, heartbeat {pulse.age:.1f}s ago), backlog {backlog.count}"
    )
    if since is not None:
        summary += f", last confirm {since:.0f}s ago"
    return None, summary
