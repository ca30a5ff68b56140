"""`cqrs_consume_health`: is the replica consuming? For an orchestrator's health check (the
consumer has no HTTP): exit 0 with one line on stdout when at least one worker of
`cqrs_consume` has a fresh heartbeat from a live process saying `consuming`; 1 with one line on
stderr saying why otherwise.

Each worker beats about once a second while it consumes, idle or not (its loop wakes every
quarter second), `reconnecting` while the broker is away (`django_tools.heartbeat`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from django.core.management.base import BaseCommand

from django_tools import heartbeat
from django_tools.heartbeat import Pulse, heartbeat_dir, read_consumers


class Command(BaseCommand):
    help = (
        "Exit 0 when at least one worker of cqrs_consume is consuming (fresh heartbeat from a "
        "live process); exit 1 with one line saying why otherwise."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--stale-after",
            type=float,
            help="seconds after which a heartbeat is stale (default HEARTBEAT_STALE_AFTER)",
        )

    def handle(self, *args, stale_after: float | None, **options) -> None:
        stale_after = heartbeat.stale_after() if stale_after is None else stale_after
        directory = heartbeat_dir()
        problem, summary = check(directory, read_consumers(directory), stale_after=stale_after)
        if problem:
            self.stderr.write(f"consumer unhealthy: {problem}")
            sys.exit(1)
        self.stdout.write(f"consumer ok: {summary}")


def check(directory: Path, pulses: list[Pulse], *, stale_after: float) -> tuple[str | None, str]:
    """(the problem, or None; a summary when there is none)."""
    if not pulses:
        return (
            f"no consumer heartbeat in {directory}: is `manage.py cqrs_consume` running, with "
            "the same HEARTBEAT_DIR?",
            "",
        )
    consuming, reasons = [], []
    for pulse in pulses:
        if not pulse.alive():
            reasons.append(f"pid {pulse.pid} is gone")
        elif pulse.age > stale_after:
            reasons.append(f"pid {pulse.pid} silent for {pulse.age:.0f}s")
        elif pulse.state != "consuming":
            reasons.append(f"pid {pulse.pid} {pulse.state}")
        else:
            consuming.append(pulse)
    if not consuming:
        return f"no worker is consuming ({'; '.join(reasons)})", ""
    active = [p.get("last_activity") for p in consuming if p.get("last_activity")]
    last = f"last message {time.time() - max(active):.0f}s ago" if active else "no message yet"
    pids = ", ".join(str(p.pid) for p in consuming)
    return None, f"{len(consuming)} of {len(pulses)} workers consuming (pids {pids}), {last}"
