"""`cqrs_consume_health`: is the replica consuming? For an orchestrator's health check (the
consumer has no HTTP): exit 0 with one line on stdout when at least one worker of
`cqrs_consume` has a fresh heartbeat from a live process saying `consuming`; 1 with one line on
stderr saying why otherwise.

Each worker beats about once a second while it consumes, idle or not (its loop wakes every
quarter second), `reconnecting` while the broker is away (`django_tools.heartbeat`).

Workers that died lately, and a wait before the next one starts (`cqrs_consume` backs off
while workers keep dying), are said on the same line, from the parent's own heartbeat.

With `--max-idle` (default CQRS_STALL_AFTER; 0 skips it), the broker is asked too: messages
ready in the replica's queue (twice, a second apart) while no worker has received anything for
that long is a stalled consumer — workers that beat but do not consume (a stuck channel, a
consumer the broker no longer delivers to).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from django.core.management.base import BaseCommand

from django_tools import heartbeat
from django_tools.heartbeat import Pulse, heartbeat_dir, read_consumers, read_supervisors


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
        parser.add_argument(
            "--max-idle",
            type=float,
            help="seconds without a message received while messages are ready in the queue "
            "(default CQRS_STALL_AFTER; 0: do not ask the broker)",
        )

    def handle(self, *args, stale_after: float | None, max_idle: float | None, **options) -> None:
        from django_tools.replica.status import stall_after

        stale_after = heartbeat.stale_after() if stale_after is None else stale_after
        max_idle = stall_after() if max_idle is None else max_idle
        directory = heartbeat_dir()
        pulses = read_consumers(directory)
        problem, summary = check(directory, pulses, stale_after=stale_after)
        if not problem and max_idle > 0:
            problem = stalled(pulses, max_idle)
        deaths = supervision(read_supervisors(directory))
        if problem:
            self.stderr.write(f"consumer unhealthy: {problem}{deaths}")
            sys.exit(1)
        self.stdout.write(f"consumer ok: {summary}{deaths}")


def supervision(supervisors: list[Pulse]) -> str:
    """What the `cqrs_consume` parents say of their workers' deaths ("" when none died)."""
    parts = []
    for pulse in supervisors:
        deaths = int(pulse.get("deaths") or 0)
        if not deaths:
            continue
        part = f"{deaths} worker deaths in {float(pulse.get('death_window') or 60):.0f}s"
        restart_in = pulse.get("restart_in")
        if restart_in is not None:
            part += f", next worker starts in {float(restart_in):.0f}s"
        parts.append(f"{part} (cqrs_consume pid {pulse.pid})")
    return "; " + "; ".join(parts) if parts else ""


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


def stalled(pulses: list[Pulse], max_idle: float) -> str | None:
    """Messages ready in the queue (on two looks a second apart) and no worker received one for
    `max_idle` seconds: the problem, else None (also when the broker does not answer: the
    workers' own states say that)."""
    from django_tools.replica.status import active_queue, broker_view
    from django_tools.replica.topology import Topology

    def last_received() -> float | None:
        times = [p.get("last_activity") for p in pulses if p.state == "consuming"]
        return max((t for t in times if t), default=None)

    last = last_received()
    if last is not None and time.time() - last < max_idle:
        return None
    topology = Topology.from_settings()
    for look in range(2):
        if look:
            time.sleep(1.0)
            pulses = read_consumers(heartbeat_dir())
            last = last_received()
            if last is not None and time.time() - last < max_idle:
                return None
        view = broker_view(topology, fresh_for=0)
        if not view.reachable or not view.depths.queue:
            return None
    idle = (
        "nothing received yet"
        if last is None
        else f"nothing received for {time.time() - last:.0f}s"
    )
    return (
        f"the consumer is stalled: {view.depths.queue} messages ready in "
        f"{active_queue(topology)}, {idle} ({view.depths.consumers} consumers on the queue)"
    )
