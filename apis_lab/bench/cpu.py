"""CPU time per replicated change, per process of a bench run, read from /proc (through psutil).

A run's processes play roles: the `writer`, the `relay` (where the pipeline has one), the
`consumer` (whatever the pipeline's hooks started: `run()` names each by the hook that returned
it) and the `broker` (the RabbitMQ node the run uses). Each role is a process tree: the process
and every descendant alive when it is read (the workers `cqrs_consume -w N` spawns, the pool a
Celery worker forks), plus the CPU of the children each of them has already reaped (a worker
that exited and was waited for). `CpuMeter` reads each tree at the start and at the end of the
measured window; the difference over the changes replicated is the role's cost per change.

Linux only: that is where /proc holds all of this (elsewhere, or without psutil, the bench says
n/a). The broker is the node's whole CPU: on a broker other clients use at the same time, their
traffic counts too.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from urllib.parse import urlsplit

try:  # a dependency of the lab; where it cannot be imported the bench says n/a
    import psutil
except ImportError:  # pragma: no cover - the venv has it
    psutil = None

#: The roles in the order the reports show them.
ROLES = ("writer", "relay", "broker", "consumer")
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "ip6-localhost"}


def available() -> bool:
    """Whether this machine can measure it: Linux, and psutil importable."""
    return psutil is not None and sys.platform.startswith("linux")


def tree_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of `pid` and of every live descendant, each with what it has
    reaped of its own children; None when `pid` is gone or cannot be read. A zombie (exited,
    not yet reaped) still counts: its times stay in /proc until its parent waits for it."""
    if pid is None or not available():
        return None
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    total = 0.0
    for index, process in enumerate(tree):
        try:
            times = process.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            if index == 0:
                return None
            continue  # a descendant that ended between the listing and the read
        total += times.user + times.system + times.children_user + times.children_system
    return total


class CpuMeter:
    """The CPU each role's process tree spends in one measured window.

    A role watched before `begin()` is read at `begin()`; one started inside the window counts
    from zero, less an `offset` (a writer that says how much CPU its start-up took before its
    first write). `end(role)` reads one role (a process about to be reaped: see `has_exited`);
    `end()` the others."""

    def __init__(self) -> None:
        self.pids: dict[str, int | None] = {}
        self.start: dict[str, float | None] = {}
        self.stop: dict[str, float | None] = {}
        self.begun = False

    def watch(self, role: str, pid: int | None) -> None:
        self.pids[role] = pid
        # Before `begin()`: read there. After: started inside the window, all of its CPU counts
        # (None when there is no such process to read at all).
        self.start[role] = None if pid is None else 0.0

    def begin(self) -> None:
        self.begun = True
        for role, pid in self.pids.items():
            self.start[role] = tree_cpu_seconds(pid)

    def offset(self, role: str, seconds: float) -> None:
        """CPU `role` spent inside the window that is not the work measured (its start-up)."""
        if self.start.get(role) is not None:
            self.start[role] += seconds

    def end(self, role: str | None = None) -> None:
        for name in [role] if role else [r for r in self.pids if r not in self.stop]:
            self.stop[name] = tree_cpu_seconds(self.pids[name])

    def spent(self) -> dict[str, float | None]:
        """Seconds of CPU of each role in the window; None where it could not be read."""
        spent: dict[str, float | None] = {}
        for role in self.pids:
            start, stop = self.start.get(role), self.stop.get(role)
            spent[role] = None if start is None or stop is None else max(0.0, stop - start)
        return spent


def per_change_us(spent: dict[str, float | None], changes: int) -> dict[str, float | None]:
    """Microseconds of CPU per change of each role."""
    return {
        role: None if seconds is None or changes <= 0 else seconds / changes * 1e6
        for role, seconds in spent.items()
    }


def has_exited(process: subprocess.Popen) -> bool:
    """Whether `process` has exited, without reaping it: until `poll()` reaps it, its CPU times
    can still be read (as a zombie's)."""
    if process.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # already reaped elsewhere
        return True


def broker_pid(rabbitmq_url: str) -> int | None:
    """The pid of the RabbitMQ node (beam.smp) serving the URL's first node on this machine:
    the process listening on its port (readable as root or as the node's user), else the only
    beam.smp running; None for a remote broker or when it cannot be told."""
    if not available():
        return None
    parts = urlsplit(rabbitmq_url.split(",")[0].strip())
    if (parts.hostname or "localhost") not in _LOOPBACK:
        return None
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    listener = _listener(port)
    if listener is not None and _is_beam(listener):
        return listener
    # Not readable (another user's node, not root), or a proxy in front of it (docker-proxy):
    # the node, if it is the only one on the machine.
    beams = [p.pid for p in psutil.process_iter(["name"]) if "beam" in (p.info["name"] or "")]
    return beams[0] if len(beams) == 1 else None


def _listener(port: int) -> int | None:
    with contextlib.suppress(psutil.Error, OSError):
        for connection in psutil.net_connections("tcp"):
            if (
                connection.status == psutil.CONN_LISTEN
                and connection.laddr
                and connection.laddr.port == port
                and connection.pid
            ):
                return connection.pid
    return None


def _is_beam(pid: int) -> bool:
    try:
        return "beam" in psutil.Process(pid).name()
    except psutil.Error:
        return False
