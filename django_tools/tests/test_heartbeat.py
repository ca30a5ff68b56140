"""Heartbeats (django_tools.heartbeat) and the health commands that read them, on files written
here: `outbox_relay_health` and `cqrs_consume_health` decide from a heartbeat and the outbox.
(tests/test_e2e_health.py runs them against the real processes.)"""

import io
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from django_tools import heartbeat
from django_tools.heartbeat import Heartbeat, consumer_file
from django_tools.outbox.models import OutboxEvent


@dataclass
class Stats:
    published: int = 0


@pytest.fixture
def beats(tmp_path, settings):
    settings.HEARTBEAT_DIR = str(tmp_path)
    return tmp_path


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write(path, **data) -> None:
    data.setdefault("pid", os.getpid())
    data.setdefault("time", time.time())
    path.write_text(json.dumps(data))


def run(command: str, *args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command(command, *args, stdout=out, stderr=err)
    except SystemExit as exc:
        return int(exc.code), err.getvalue().strip()
    return 0, out.getvalue().strip()


# --- the heartbeat file ---------------------------------------------------------------------


def test_a_beat_is_written_at_once_then_at_most_every_interval(tmp_path):
    path = tmp_path / "sub" / "x.json"
    beat = Heartbeat(path, every=60)
    beat.beat("publishing", Stats(published=1))
    first = json.loads(path.read_text())
    assert first["state"] == "publishing" and first["published"] == 1
    assert first["pid"] == os.getpid() and abs(first["time"] - time.time()) < 5
    beat.beat("publishing", Stats(published=2))
    assert json.loads(path.read_text())["published"] == 1, "throttled"
    beat.beat("disconnected", {"reconnects": 1})  # a new state is written at once
    assert json.loads(path.read_text())["state"] == "disconnected"
    assert [p.name for p in path.parent.iterdir()] == ["x.json"], "no temporary file left"


def test_activity_is_recorded_even_between_writes(tmp_path):
    beat = Heartbeat(tmp_path / "c.json", every=0)
    beat.beat("consuming")
    assert json.loads((tmp_path / "c.json").read_text())["last_activity"] is None
    beat.beat("consuming", active=True)
    assert abs(json.loads((tmp_path / "c.json").read_text())["last_activity"] - time.time()) < 5


def test_disabled_writes_nothing_and_remove_is_safe(tmp_path):
    Heartbeat.disabled().beat("publishing")
    Heartbeat.disabled().remove()
    beat = Heartbeat(tmp_path / "r.json")
    beat.beat("standby")
    beat.remove()
    beat.remove()
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_folder_never_breaks_the_loop(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    beat = Heartbeat(blocker / "r.json", every=0)
    beat.beat("publishing")
    beat.beat("standby")
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "cannot write the heartbeat" in caplog.records[0].message


def test_a_heartbeat_that_cannot_be_written_any_more_is_removed(tmp_path, monkeypatch):
    """A full disk must not make a working process look stuck (cqrs_consume kills workers
    whose heartbeat is stale): its old heartbeat goes."""
    path = tmp_path / "w.json"
    beat = Heartbeat(path, every=0)
    beat.beat("consuming")
    assert path.exists()

    def full(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(heartbeat.os, "replace", full)
    beat.beat("consuming")
    assert not path.exists() and not list(tmp_path.iterdir())


def test_reading_back(tmp_path):
    assert heartbeat.read(tmp_path / "none.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    assert heartbeat.read(tmp_path / "bad.json") is None
    write(tmp_path / "ok.json", state="consuming", time=time.time() - 10)
    pulse = heartbeat.read(tmp_path / "ok.json")
    assert pulse.state == "consuming" and pulse.alive() and 9 < pulse.age < 20
    assert heartbeat.pid_alive(os.getpid()) and not heartbeat.pid_alive(dead_pid())


def test_a_worker_prunes_the_files_of_dead_workers(tmp_path):
    gone = dead_pid()
    write(tmp_path / consumer_file(gone), pid=gone, state="consuming")
    write(tmp_path / consumer_file(), state="consuming")
    heartbeat.prune_consumers(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [consumer_file()]


def test_the_default_folder_is_named_after_the_service(settings):
    settings.HEARTBEAT_DIR = None
    assert heartbeat.heartbeat_dir().name == "apis-tools-tests-heartbeats"


# --- outbox_relay_health --------------------------------------------------------------------


def pending_row(age: float) -> None:
    OutboxEvent.objects.create(
        cqrs_id="book", instance_pk="1", signal_type="SAVE", routing_key="book", body="{}",
        created_at=timezone.now() - timedelta(seconds=age),
    )  # fmt: skip


@pytest.mark.django_db
def test_relay_health(beats):
    path = beats / heartbeat.RELAY_FILE
    code, line = run("outbox_relay_health")
    assert code == 1 and "no heartbeat at" in line

    write(path, state="publishing", last_confirmed_at=None)
    assert run("outbox_relay_health")[1].startswith("outbox relay ok: publishing")
    write(path, state="standby")
    code, line = run("outbox_relay_health")  # the heartbeat's age is in the line: not compared
    assert code == 0 and line.startswith("outbox relay ok: standby")

    write(path, state="disconnected", reconnects=3)
    assert run("outbox_relay_health") == (
        1,
        f"outbox relay unhealthy: the relay (pid {os.getpid()}) cannot reach the broker "
        "(3 reconnects so far)",
    )
    write(path, state="blocked")
    code, line = run("outbox_relay_health")
    assert code == 1 and "the broker blocks the relay's publishing" in line
    write(path, state="publishing", time=time.time() - 100)
    code, line = run("outbox_relay_health")
    assert code == 1 and "has not beaten for 100s (limit 15s): it is stuck" in line
    assert run("outbox_relay_health", "--stale-after", "200")[0] == 0
    write(path, state="publishing", pid=dead_pid())
    code, line = run("outbox_relay_health")
    assert code == 1 and "is gone" in line


@pytest.mark.django_db
def test_relay_health_sees_a_stuck_outbox(beats):
    path = beats / heartbeat.RELAY_FILE
    pending_row(age=5)
    write(path, state="publishing")
    assert run("outbox_relay_health")[0] == 0, "young rows are normal"
    pending_row(age=120)
    code, line = run("outbox_relay_health")
    assert code == 1
    assert "the outbox is stuck: 2 rows unpublished, the oldest 120s old" in line
    assert line.endswith(f"nothing confirmed yet (relay pid {os.getpid()}, publishing)")
    assert run("outbox_relay_health", "--max-age", "300")[0] == 0
    # Something confirmed within the window: a relay working through a backlog is not stuck.
    write(path, state="publishing", last_confirmed_at=time.time() - 2)
    assert run("outbox_relay_health")[0] == 0
    write(path, state="publishing", last_confirmed_at=time.time() - 90)
    assert "nothing confirmed for 90s" in run("outbox_relay_health")[1]


# --- cqrs_consume_health --------------------------------------------------------------------


def test_consumer_health(beats):
    code, line = run("cqrs_consume_health")
    assert code == 1 and line.startswith("consumer unhealthy: no consumer heartbeat in")

    gone = dead_pid()
    write(beats / consumer_file(gone), pid=gone, state="consuming")
    assert run("cqrs_consume_health") == (
        1,
        f"consumer unhealthy: no worker is consuming (pid {gone} is gone)",
    )
    write(beats / consumer_file(), state="reconnecting")
    code, line = run("cqrs_consume_health")
    assert code == 1 and f"pid {os.getpid()} reconnecting" in line

    write(beats / consumer_file(), state="consuming", time=time.time() - 60)
    assert f"pid {os.getpid()} silent for 60s" in run("cqrs_consume_health")[1]

    write(beats / consumer_file(), state="consuming", last_activity=time.time() - 3)
    code, line = run("cqrs_consume_health")
    assert code == 0
    assert line == (
        f"consumer ok: 1 of 2 workers consuming (pids {os.getpid()}), last message 3s ago"
    )


def test_consumer_health_says_the_workers_deaths_and_the_wait_before_the_next(beats):
    """`cqrs_consume` backs off while workers keep dying, and says so in its own heartbeat."""
    from django_tools.heartbeat import supervisor_file

    gone = dead_pid()
    write(beats / supervisor_file(gone), pid=gone, state="restarting", deaths=9, restart_in=1)
    write(beats / supervisor_file(), state="restarting", deaths=7, death_window=60, restart_in=4)
    code, line = run("cqrs_consume_health")
    assert code == 1 and line.endswith(
        f"; 7 worker deaths in 60s, next worker starts in 4s (cqrs_consume pid {os.getpid()})"
    )  # the parent that is gone says nothing
    write(beats / consumer_file(), state="consuming", last_activity=time.time())
    write(beats / supervisor_file(), state="supervising", deaths=3, death_window=60)
    code, line = run("cqrs_consume_health")
    assert code == 0 and line.endswith(f"; 3 worker deaths in 60s (cqrs_consume pid {os.getpid()})")
    write(beats / supervisor_file(), state="supervising", deaths=0, death_window=60)
    assert run("cqrs_consume_health")[1].endswith("last message 0s ago")
