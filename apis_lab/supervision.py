"""Processes the lab supervises itself (`Supervised`, `ManageProcess`) and /proc look-ups on them;
used by the supervised ecosystem, the fault suite, the bench and the end-to-end tests.

Unlike honcho (`apis up`), which stops everything when one process dies, each process here runs in
a session of its own with its log in a file, is killable one at a time (`kill -9` of a fault) and
is restarted the way an orchestrator would."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Supervised:
    name: str
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    log: Path
    process: subprocess.Popen | None = None
    #: Every process group this one ever had (a restart makes a new one): all are killed at the
    #: end, so nothing a kill left behind survives the lab.
    groups: list[int] = field(default_factory=list)
    starts: int = 0

    def start(self) -> Supervised:
        with open(self.log, "a") as log:
            log.write(f"--- lab: starting {self.name} ({self.starts + 1}) ---\n")
            log.flush()
            self.process = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.groups.append(self.process.pid)
        self.starts += 1
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exit_code(self) -> int | None:
        return self.process.poll() if self.process else None

    def kill9(self, whole_group: bool = True) -> None:
        """SIGKILL: nothing gets to clean up. Only the main process when `whole_group` is
        False (its children then find themselves orphans)."""
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            if whole_group:
                os.killpg(self.process.pid, signal.SIGKILL)
            else:
                os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def children(self, marker: bytes = b"") -> list[int]:
        """Live child processes whose command line contains `marker`."""
        return children_of(self.pid, marker) if self.alive() else []

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
        for group in self.groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def sigterm_as_interrupt() -> None:
    """SIGTERM unwinds like Ctrl-C (a long lab command stops everything it started, through
    its `finally`s, whichever of the two stopped it)."""
    signal.signal(signal.SIGTERM, _interrupt)


def children_of(pid: int | None, marker: bytes = b"") -> list[int]:
    """Live (not zombie) children of `pid` whose command line contains `marker`, from /proc."""
    if pid is None:
        return []
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != pid or fields[0] == "Z":
                continue
            if marker and marker not in (stat.parent / "cmdline").read_bytes():
                continue
        except (OSError, ValueError, IndexError):
            continue
        found.append(int(stat.parent.name))
    return found


def wait_for(condition, timeout: float, interval: float = 0.1):
    """Poll until `condition()` is truthy; its value, or None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


class ManageProcess:
    """`manage.py <args>` of a service, in a process group of its own (so that a SIGKILL
    takes its workers too)."""

    def __init__(
        self,
        directory: Path,
        args: list[str],
        env: dict[str, str],
        log: Path,
        command: list[str] | None = None,
    ) -> None:
        self.directory = directory
        self.argv = command or [sys.executable, "manage.py", *args]
        self.env = env
        self.log = log
        self.process: subprocess.Popen | None = None

    @classmethod
    def module(
        cls, directory: Path, settings: str, module: str, args: list[str], env: dict, log: Path
    ) -> ManageProcess:
        """`python -m module args` under a service's Django settings, instead of manage.py."""
        env = {**env, "DJANGO_SETTINGS_MODULE": settings}
        return cls(directory, [], env, log, command=[sys.executable, "-m", module, *args])

    def start(self) -> ManageProcess:
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.directory,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def kill9(self) -> None:
        """SIGKILL to the whole group at once: nothing gets to clean up."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill9()
        if self.process:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
