"""`cqrs_consume -w N`: django-cqrs's command, with its workers supervised.

Stock django-cqrs starts N worker processes and then only waits for a signal: a worker that dies
(a bug, an out-of-memory kill, `kill -9`) leaves the parent running with nobody consuming, and a
process supervisor that watches the parent sees nothing wrong. Here the parent checks its
workers every second and starts a new one in place of each that died. Workers that keep dying
(more than `MAX_DEATHS` in `DEATH_WINDOW` seconds) are started again after a wait that doubles
with each further death, up to `MAX_BACKOFF`: the parent never gives up (a message that kills
every worker it reaches is set aside by the workers themselves after a few deliveries, see
`django_tools.replica.probation`; a broker or database that is not there yet comes back), and
the deaths and the wait are in its heartbeat file, which `cqrs_consume_health` reports.

A worker that is alive but stuck — paused (SIGSTOP, a frozen container), or hung somewhere it
never comes back from — holds its prefetched messages unacknowledged and consumes nothing. Each
worker writes its heartbeat file every second whatever it waits for (`django_tools.heartbeat`,
the consumer's connection watch and `LinkKeeper`); the parent kills (-9) a worker whose
heartbeat is older than HEARTBEAT_STALE_AFTER and starts another: the broker gives the killed
worker's messages back to the queue at once.

Workers stop themselves when their parent dies (see `ReliableRabbitMQTransport.consume`), so a
`kill -9` of the parent never leaves orphans consuming beside its replacement.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections import deque
from pathlib import Path

from dj_cqrs.management.commands.cqrs_consume import Command as StockCommand
from dj_cqrs.management.commands.cqrs_consume import WorkersManager, consume
from django.core.management.base import CommandError
from watchfiles.run import start_process

from django_tools.conf import setting
from django_tools.heartbeat import (
    Heartbeat,
    consumer_file,
    heartbeat_dir,
    read,
    stale_after,
    supervisor_file,
)
from django_tools.replica.checks import check_queue_type
from django_tools.replica.transport import PARENT_PID_ENV

logger = logging.getLogger("django_tools.replica")

MAX_DEATHS = 5
DEATH_WINDOW = 60.0
#: The longest wait before a worker that keeps dying is started again.
MAX_BACKOFF = 30.0
CHECK_EVERY = 1.0
#: Workers when `-w` is not given (django-cqrs: 1). Measured on 2 cores, a second worker applies
#: 1.5× (SQLite) to 1.8× (PostgreSQL) as many messages per second as one: see docs/desempenho.md.
DEFAULT_WORKERS = 2


def restart_delay(deaths: int) -> float:
    """Seconds to wait before starting a worker again, after `deaths` deaths in DEATH_WINDOW:
    none up to MAX_DEATHS, then 1, 2, 4… up to MAX_BACKOFF."""
    if deaths <= MAX_DEATHS:
        return 0.0
    return min(MAX_BACKOFF, 2.0 ** min(deaths - MAX_DEATHS - 1, 16))


class SupervisedWorkers(WorkersManager):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.deaths: deque[float] = deque()
        self.restart_at: dict[int, float] = {}  # pool index → when its worker starts again
        self.stale_after = stale_after()
        self.beats = heartbeat_dir()
        self.heartbeat = Heartbeat(self.beats / supervisor_file())

    def start(self) -> None:
        # Workers compare their parent with this pid and stop once they are orphans.
        os.environ[PARENT_PID_ENV] = str(os.getpid())
        super().start()

    def run(self) -> None:
        if self.reload:  # development mode: the stock file watcher restarts everything anyway
            return super().run()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.handle_signal)
        self.start()
        try:
            while not self.stop_event.wait(CHECK_EVERY):
                self.kill_stalled_workers()
                self.replace_dead_workers()
                self.beat()
            self.terminate()
        finally:
            self.heartbeat.remove()
        return None

    def beat(self) -> None:
        now = time.monotonic()
        self._forget_old_deaths(now)
        waits = [at - now for at in self.restart_at.values()]
        self.heartbeat.beat(
            "restarting" if waits else "supervising",
            workers=self.workers,
            deaths=len(self.deaths),
            death_window=DEATH_WINDOW,
            restart_in=round(max(0.0, min(waits)), 1) if waits else None,
        )

    def _forget_old_deaths(self, now: float) -> None:
        while self.deaths and now - self.deaths[0] > DEATH_WINDOW:
            self.deaths.popleft()

    def kill_stalled_workers(self) -> None:
        """Kill (-9) every worker whose heartbeat went stale; `replace_dead_workers` then
        starts another in its place. A worker that has not beaten yet (starting) is left."""
        for process in self.pool:
            if not process.is_alive():
                continue
            pulse = read(self.beats / consumer_file(process.pid))
            if pulse is None or pulse.pid != process.pid or pulse.age <= self.stale_after:
                continue
            logger.error(
                "consumer worker pid %s has not beaten for %.0fs (limit %.0fs, last state %s): "
                "paused or hung; killing it (-9) so its messages go back to the queue",
                process.pid, pulse.age, self.stale_after, pulse.state,
            )  # fmt: skip
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.join(5)
            with contextlib.suppress(OSError):
                pulse.path.unlink()

    def replace_dead_workers(self) -> None:
        now = time.monotonic()
        for index, process in enumerate(self.pool):
            if process.is_alive():
                continue
            if index not in self.restart_at:
                self.deaths.append(now)
                self._forget_old_deaths(now)
                delay = restart_delay(len(self.deaths))
                self.restart_at[index] = now + delay
                if delay:
                    logger.error(
                        "consumer worker pid %s died (exit code %s), %s deaths in %.0fs: "
                        "starting another in %.0fs",
                        process.pid, process.exitcode, len(self.deaths), DEATH_WINDOW, delay,
                    )  # fmt: skip
            if now < self.restart_at[index]:
                continue
            del self.restart_at[index]
            replacement = start_process(consume, "function", (), self.consume_kwargs)
            self.pool[index] = replacement
            logger.error(
                "consumer worker pid %s died (exit code %s); started pid %s in its place",
                process.pid, process.exitcode, replacement.pid,
            )  # fmt: skip


class Command(StockCommand):
    def refuse_misconfiguration(self) -> None:
        """One clear line instead of workers that die, restart and die again."""
        if setting("REPLICATION_MODE") == "celery":
            raise CommandError(
                "REPLICATION_MODE=celery: the replica's Celery worker applies the changes "
                "(`celery -A <project> worker`), cqrs_consume has nothing to consume"
            )
        for problem in check_queue_type():
            if problem.is_serious():
                raise CommandError(f"{problem.msg}: {problem.hint}")

    help = (
        f"Start N consumer workers (django-cqrs's command; -w, default {DEFAULT_WORKERS}); a "
        "worker that dies is replaced, after a growing wait (up to 30 s) when workers keep dying."
    )

    def add_arguments(self, parser) -> None:
        super().add_arguments(parser)
        parser.set_defaults(workers=DEFAULT_WORKERS)

    def handle(
        self,
        *args,
        workers=DEFAULT_WORKERS,
        cqrs_id=None,
        reload=False,
        ignore_paths=None,
        sigint_timeout=5,
        sigkill_timeout=1,
        **options,
    ):
        self.refuse_misconfiguration()
        manager = SupervisedWorkers(
            workers=workers,
            consume_kwargs=self.get_consume_kwargs(cqrs_id),
            reload=reload,
            ignore_paths=[Path(p).resolve() for p in ignore_paths.split(",")]
            if ignore_paths
            else None,
            sigint_timeout=sigint_timeout,
            sigkill_timeout=sigkill_timeout,
        )
        manager.run()
