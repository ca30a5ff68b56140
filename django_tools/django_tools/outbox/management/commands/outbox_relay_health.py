"""`outbox_relay_health`: can the relay make progress? For an orchestrator's health check (the
relay has no HTTP): exit 0 with one line on stdout, or 1 with one line on stderr saying why.

Healthy means: the relay's heartbeat (`django_tools.heartbeat`) is fresh, from a live process,
and says `publishing` or `standby`; and the outbox is not stuck (`outbox.progress`): no
unpublished row is older than `--max-age` (CQRS_STALL_AFTER) seconds unless something was
confirmed within that window (a relay that keeps up with a steady stream of writes always has
rows of a few milliseconds, never old ones). A heartbeat older than `--stale-after`
(HEARTBEAT_STALE_AFTER) is a relay paused or stuck.
"""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import BaseCommand
from django.db import DatabaseError

from django_tools import heartbeat
from django_tools.heartbeat import RELAY_FILE, Pulse, heartbeat_dir, read
from django_tools.outbox.progress import stall_after

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
            help="seconds an unpublished row may wait while nothing is confirmed "
            "(default CQRS_STALL_AFTER)",
        )
        parser.add_argument(
            "--stale-after",
            type=float,
            help="seconds after which a heartbeat is stale (default HEARTBEAT_STALE_AFTER)",
        )

    def handle(self, *args, max_age: float | None, stale_after: float | None, **options) -> None:
        max_age = stall_after() if max_age is None else max_age
        stale_after = heartbeat.stale_after() if stale_after is None else stale_after
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
        if pulse.state == "blocked":
            return (
                f"the broker blocks the relay's publishing (pid {pulse.pid}): a resource alarm "
                "(disk or memory) on the broker",
                "",
            )
        return f"the relay (pid {pulse.pid}) is {pulse.state}", ""

    from django_tools.outbox.progress import relay_progress

    try:
        progress = relay_progress(max_age, last_confirmed_at=pulse.get("last_confirmed_at"))
    except DatabaseError as exc:
        return f"cannot read the outbox: {str(exc).strip() or type(exc).__name__}", ""
    if progress.stalled:
        return f"{progress.detail} (relay pid {pulse.pid}, {pulse.state})", ""
    backlog, since = progress.backlog, progress.since_published
    summary = (
        f"{pulse.state} (pid {pulse.pid}, heartbeat {pulse.age:.1f}s ago), backlog {backlog.count}"
    )
    if since is not None:
        summary += f", last confirm {since:.0f}s ago"
    return None, summary
