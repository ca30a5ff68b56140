"""Heartbeats of the processes that have no HTTP to probe: the outbox relay and the replica's
consumer workers.

Such a process calls `Heartbeat.beat(state, counters)` from its loop, as often as it likes; at
most about once a second (or at once when the state changes) the heartbeat is written to a JSON
file `{"pid", "time", "state", "last_activity", ...counters}`, atomically (a temporary file,
then `os.replace`), so a reader never sees half a file. The health commands
(`outbox_relay_health`, `cqrs_consume_health`) read those files: a heartbeat that is recent,
from a live process and in a working state means the process is making progress.

The files are in `HEARTBEAT_DIR` (unset: a folder named after the service in the system's
temporary folder). A heartbeat never breaks the loop that writes it: a folder that cannot be
written is logged once and skipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("django_tools.heartbeat")

#: The relay's heartbeat file (one relay process per machine or container publishes).
RELAY_FILE = "outbox-relay.json"
#: One file per consumer worker process: `cqrs-consume-<pid>.json`.
CONSUMER_PREFIX = "cqrs-consume-"
#: One per `cqrs_consume` parent, its workers' supervisor: `cqrs-supervisor-<pid>.json`.
SUPERVISOR_PREFIX = "cqrs-supervisor-"

#: Seconds between two writes of the same state.
WRITE_EVERY = 1.0
#: A heartbeat older than this (HEARTBEAT_STALE_AFTER; the health commands' `--stale-after`)
#: is a process stuck somewhere or paused. The relay and the consumer workers beat about once a
#: second whatever they wait for (the broker's confirms, a batch in the database, a reconnect's
#: backoff; at worst a connect attempt, CQRS_AMQP_CONNECT_TIMEOUT per node).
STALE_AFTER = 15.0


def stale_after() -> float:
    """HEARTBEAT_STALE_AFTER, else `STALE_AFTER`."""
    from django.conf import settings

    return float(getattr(settings, "HEARTBEAT_STALE_AFTER", STALE_AFTER))


def heartbeat_dir() -> Path:
    """HEARTBEAT_DIR, else `<tmp>/apis-<service>-heartbeats`."""
    from django.conf import settings

    configured = getattr(settings, "HEARTBEAT_DIR", None)
    if configured:
        return Path(configured)
    service = getattr(settings, "SERVICE_NAME", "django")
    return Path(tempfile.gettempdir()) / f"apis-{service}-heartbeats"


def consumer_file(pid: int | None = None) -> str:
    return f"{CONSUMER_PREFIX}{pid or os.getpid()}.json"


def supervisor_file(pid: int | None = None) -> str:
    return f"{SUPERVISOR_PREFIX}{pid or os.getpid()}.json"


class Heartbeat:
    """Writes one process's heartbeat file. `Heartbeat(None)` writes nothing (the default of
    the relays and the consumer when they run inside tests or other code)."""

    def __init__(self, path: Path | None, every: float = WRITE_EVERY) -> None:
        self.path = path
        self.every = every
        self.state: str | None = None
        self.last_activity: float | None = None
        self._written = 0.0  # monotonic time of the last write
        self._failed = False

    @classmethod
    def disabled(cls) -> Heartbeat:
        return cls(None)

    def beat(self, state: str, counters: object = None, *, active: bool = False, **extra) -> None:
        """Record that the loop is alive in `state`; `active` when it just did some work.
        Cheap when nothing is due: the file is written when the state changed or `every`
        seconds passed since the last write."""
        if self.path is None:
            return
        now = time.monotonic()
        if active:
            self.last_activity = time.time()
        if state == self.state and now - self._written < self.every:
            return
        self.state, self._written = state, now
        data = {
            "pid": os.getpid(),
            "time": time.time(),
            "state": state,
            "last_activity": self.last_activity,
            **_as_dict(counters),
            **extra,
        }
        self._write(data)

    def remove(self) -> None:
        """The process is leaving on purpose: its heartbeat goes with it."""
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()

    def _write(self, data: dict) -> None:
        path = self.path
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(json.dumps(data, default=str))
            os.replace(temporary, path)
        except OSError as exc:
            if not self._failed:
                logger.warning("cannot write the heartbeat %s (%s); going on without it", path, exc)
                self._failed = True
            # An old heartbeat left in place would say this process stopped beating (and
            # `cqrs_consume` kills a worker whose heartbeat is stale): none says "unknown".
            with contextlib.suppress(OSError):
                temporary.unlink()
            with contextlib.suppress(OSError):
                path.unlink()
        else:
            self._failed = False


def _as_dict(counters: object) -> dict:
    if counters is None:
        return {}
    if dataclasses.is_dataclass(counters) and not isinstance(counters, type):
        return dataclasses.asdict(counters)
    if isinstance(counters, Mapping):
        return dict(counters)
    raise TypeError(f"counters must be a dataclass or a mapping, not {type(counters).__name__}")


# --- reading (the health commands) ---------------------------------------------------------


@dataclass(frozen=True)
class Pulse:
    """One heartbeat file as read back."""

    path: Path
    data: dict

    @property
    def pid(self) -> int:
        return int(self.data.get("pid") or 0)

    @property
    def state(self) -> str:
        return str(self.data.get("state") or "?")

    @property
    def age(self) -> float:
        """Seconds since the heartbeat was written."""
        return max(0.0, time.time() - float(self.data.get("time") or 0))

    def alive(self) -> bool:
        return pid_alive(self.pid)

    def get(self, key: str, default=None):
        return self.data.get(key, default)


def read(path: Path) -> Pulse | None:
    """The heartbeat in `path`, or None when there is none (or it is not a heartbeat)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "time" not in data:
        return None
    return Pulse(path, data)


def read_consumers(directory: Path) -> list[Pulse]:
    """Every consumer worker's heartbeat in `directory`, oldest pid first."""
    pulses = [read(path) for path in sorted(directory.glob(f"{CONSUMER_PREFIX}*.json"))]
    return sorted((p for p in pulses if p is not None), key=lambda p: p.pid)


def read_supervisors(directory: Path) -> list[Pulse]:
    """The heartbeats of the live `cqrs_consume` parents in `directory`."""
    pulses = [read(path) for path in sorted(directory.glob(f"{SUPERVISOR_PREFIX}*.json"))]
    return [pulse for pulse in pulses if pulse is not None and pulse.alive()]


def prune_consumers(directory: Path) -> None:
    """Remove the heartbeats of consumer workers that are gone (a worker killed by a signal
    leaves its file behind). Called by a worker as it starts."""
    for pulse in read_consumers(directory):
        if not pulse.alive():
            with contextlib.suppress(OSError):
                pulse.path.unlink()


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` runs (a zombie does not count)."""
    if pid <= 0:
        return False
    if Path("/proc/self/stat").exists():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[-1].split()[0] != "Z"
    try:  # no /proc (macOS): ask the kernel
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
