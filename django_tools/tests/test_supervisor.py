"""`cqrs_consume`'s supervision of its workers, on stand-in processes: a worker that dies is
replaced at once; workers that keep dying are replaced after a wait that doubles up to a bound,
and the parent never gives up (the real processes: tests/test_e2e_consumer_failures.py and
tests/test_e2e_crash_loop.py)."""

import json

import pytest

from django_tools.heartbeat import supervisor_file
from django_tools.replica.management.commands import cqrs_consume
from django_tools.replica.management.commands.cqrs_consume import (
    MAX_BACKOFF,
    MAX_DEATHS,
    SupervisedWorkers,
    restart_delay,
)

# No database in it (the supervision of stand-in processes): CI runs it on SQLite only.
pytestmark = pytest.mark.any_database


def test_the_wait_doubles_after_max_deaths_and_is_bounded():
    assert [restart_delay(n) for n in range(1, MAX_DEATHS + 1)] == [0.0] * MAX_DEATHS
    waits = [restart_delay(MAX_DEATHS + n) for n in range(1, 9)]
    assert waits == [1, 2, 4, 8, 16, MAX_BACKOFF, MAX_BACKOFF, MAX_BACKOFF]
    assert restart_delay(10_000) == MAX_BACKOFF


class Process:
    """A stand-in for a worker process: dies when told."""

    pids = iter(range(10_000_000, 20_000_000))

    def __init__(self) -> None:
        self.pid = next(self.pids)
        self.alive = True
        self.exitcode = None

    def is_alive(self) -> bool:
        return self.alive

    def die(self) -> None:
        self.alive, self.exitcode = False, -9


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(cqrs_consume.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(cqrs_consume, "start_process", lambda *args, **kwargs: Process())
    return now


def test_workers_that_keep_dying_are_started_again_after_a_bounded_wait(clock, settings, tmp_path):
    settings.HEARTBEAT_DIR = str(tmp_path)
    manager = SupervisedWorkers(consume_kwargs={}, workers=1)
    manager.pool = [Process()]
    started = []
    for death in range(1, MAX_DEATHS + 4):
        manager.pool[0].die()
        manager.replace_dead_workers()
        wait = restart_delay(death)
        if wait:  # not yet: the same dead worker, a restart scheduled
            assert not manager.pool[0].is_alive()
            manager.beat()
            beat = json.loads((tmp_path / supervisor_file()).read_text())
            assert beat["state"] == "restarting" and beat["deaths"] == death
            assert beat["restart_in"] == wait
            clock[0] += wait - 0.5
            manager.replace_dead_workers()
            assert not manager.pool[0].is_alive()
            clock[0] += 0.5
            manager.replace_dead_workers()
        assert manager.pool[0].is_alive()  # replaced, never given up
        started.append(manager.pool[0].pid)
        clock[0] += 0.1
    assert len(set(started)) == MAX_DEATHS + 3
    # Deaths older than the window are forgotten: the next one is replaced at once again.
    clock[0] += cqrs_consume.DEATH_WINDOW + 1
    manager.pool[0].die()
    manager.replace_dead_workers()
    assert manager.pool[0].is_alive()
    manager.beat()
    beat = json.loads((tmp_path / supervisor_file()).read_text())
    assert beat["state"] == "supervising" and beat["deaths"] == 1
    manager.heartbeat.remove()


def test_cqrs_consume_starts_two_workers_unless_told_otherwise():
    """The default a deployment of this size runs (docs/desempenho.md); `-w` still decides."""
    from django_tools.replica.management.commands.cqrs_consume import Command

    parser = Command().create_parser("manage.py", "cqrs_consume")
    assert parser.parse_args([]).workers == 2
    assert parser.parse_args(["-w", "1"]).workers == 1
