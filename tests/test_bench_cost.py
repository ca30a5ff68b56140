"""`apis bench`'s cost per change, without the bench: the CPU of process trees read from /proc
(real processes, a few hundred ms each), the medians and totals of the report, its JSON and
table, the REST burst's on/off ratio, and the lab-only hook that turns replication off."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psutil
import pytest

from apis_lab.bench import cpu
from apis_lab.bench.report import BenchReport, BurstResult, PipelineResult, PipelineRun
from apis_lab.supervision import wait_for

pytestmark = [
    pytest.mark.any_database,
    pytest.mark.skipif(not cpu.available(), reason="CPU per change is measured on Linux only"),
]

#: A child that burns ~0.3 s of CPU, and its parent that waits for it (reaps it: its CPU is
#: then the parent's cutime/cstime), then for its stdin to close.
BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
#: What /proc shows of that burn: its user and system times are each cut to 10 ms ticks, so
#: 0.3 s of CPU can read 0.29 (seen in CI: waiting for >= 0.3 timed out).
BURNT = 0.25
PARENT = (
    "import subprocess, sys\n"
    f"subprocess.Popen([sys.executable, '-c', {BURN!r}]).wait()\n"
    "sys.stdin.read()\n"
)  # fmt: skip


def test_a_tree_counts_its_live_children_and_a_zombie_is_still_readable():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdin=subprocess.PIPE)
    try:
        # The child burns 0.3 s (a live descendant), exits and is reaped (its parent's cutime).
        assert wait_for(lambda: (cpu.tree_cpu_seconds(parent.pid) or 0) >= BURNT, timeout=20)
        assert wait_for(lambda: not psutil.Process(parent.pid).children(), timeout=20)
        assert cpu.tree_cpu_seconds(parent.pid) >= BURNT
        parent.stdin.close()
        assert wait_for(lambda: cpu.has_exited(parent), timeout=20)
        assert parent.returncode is None  # exited, not reaped: still in /proc
        assert cpu.tree_cpu_seconds(parent.pid) >= BURNT
        assert parent.poll() == 0
    finally:
        parent.kill()
        parent.wait()
    assert cpu.tree_cpu_seconds(parent.pid) is None  # reaped: gone
    assert cpu.tree_cpu_seconds(None) is None


def test_the_meter_counts_the_window_only():
    busy = subprocess.Popen([sys.executable, "-c", BURN + "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)  # fmt: skip
    try:
        meter = cpu.CpuMeter()
        meter.watch("consumer", busy.pid)
        meter.watch("broker", None)  # not found: n/a, not zero
        assert wait_for(lambda: (cpu.tree_cpu_seconds(busy.pid) or 0) >= BURNT, timeout=20)
        meter.begin()  # after its burn: the window sees it idle
        late = subprocess.Popen([sys.executable, "-c", BURN])
        meter.watch("writer", late.pid)  # started inside the window: from zero
        assert wait_for(lambda: cpu.has_exited(late), timeout=20)
        meter.end("writer")
        late.wait()
        meter.offset("writer", 0.05)  # its start-up, said by itself
        meter.end()
    finally:
        busy.kill()
        busy.wait()
    spent = meter.spent()
    assert spent["consumer"] < 0.1
    assert spent["broker"] is None
    assert 0.2 <= spent["writer"] < 1.0
    per_change = cpu.per_change_us(spent, 1000)
    assert per_change["writer"] == pytest.approx(spent["writer"] * 1000)
    assert per_change["broker"] is None


def test_the_broker_is_the_node_listening_on_the_urls_port(rabbitmq_url):
    pid = cpu.broker_pid(rabbitmq_url)
    assert pid is not None, "no beam.smp found for " + rabbitmq_url.split("@")[-1]
    assert "beam" in psutil.Process(pid).name()
    assert cpu.broker_pid("amqp://guest:guest@rabbit.example:5672/") is None  # not this machine


def _run(name: str, n: int, **cpu_s) -> PipelineRun:
    return PipelineRun(name, n, 1.0, 1.0, [1.0, 2.0], cpu_s=cpu_s)


def test_the_report_gives_the_median_per_role_the_total_and_what_it_cannot_say():
    stock = PipelineResult(
        "stock",
        [
            _run("stock", 1000, writer=0.1, broker=None, consumer=0.3),
            _run("stock", 1000, writer=0.3, broker=None, consumer=0.5),
            _run("stock", 1000, writer=0.2, broker=None, consumer=0.4),
        ],
    )
    project = PipelineResult("project", [_run("project", 2000, writer=0.2, relay=0.1, broker=0.1,
                                              consumer=0.4)])  # fmt: skip
    cost = stock.cpu_us_per_change()
    assert cost == {"writer": 200.0, "broker": None, "consumer": 400.0, "total": 600.0}
    report = BenchReport(
        n=1000,
        database="sqlite",
        queue_type="quorum",
        consumers=1,
        ceiling=[9000.0],
        pipelines={"stock": stock, "project": project},
    )
    data = json.loads(json.dumps(report.as_json()))
    assert data["stock"]["cpu_us_per_change"] == {
        "writer": 200.0, "relay": None, "broker": None, "consumer": 400.0, "total": 600.0
    }  # fmt: skip
    assert data["project"]["cpu_us_per_change"]["total"] == 400.0
    table = report.render(None, 100)
    assert "CPU per replicated change" in table
    row = next(
        line.split()
        for line in table.splitlines()
        if line.strip().startswith("stock") and "n/a" in line
    )
    assert row == ["stock", "200.0", "-", "n/a", "400.0", "600.0"]
    assert "other clients' traffic counts too" in table
    # Nothing measured (not Linux, no psutil): no key in the JSON, n/a in the table.
    bare = BenchReport(
        n=10,
        database="sqlite",
        queue_type="quorum",
        consumers=1,
        pipelines={"stock": PipelineResult("stock", [_run("stock", 10)])},
    )
    assert "cpu_us_per_change" not in bare.as_json()["stock"]
    assert "n/a (measured from /proc" in bare.render(None, 1)


def test_the_burst_with_replication_off_gives_the_ratio():
    on = BurstResult(
        total=100,
        clients=4,
        write_seconds=2.0,
        complete_after_seconds=0.1,
        errors=0,
        latencies_ms=[10.0] * 50 + [40.0] * 50,
    )
    off = BurstResult(total=100, clients=4, write_seconds=1.0, complete_after_seconds=0.0,
                      errors=0, latencies_ms=[5.0] * 99 + [20.0], replication=False)  # fmt: skip
    report = BenchReport(n=10, database="sqlite", queue_type="quorum", consumers=1, burst=on,
                         burst_off=off)  # fmt: skip
    burst = report.as_json()["burst"]
    assert burst["writes_per_s"] == 50.0 and burst["replication_off"]["writes_per_s"] == 100.0
    assert burst["on_off_ratio"] == 0.5
    assert burst["latency_p50_ms"] == 10.0 and burst["replication_off"]["latency_p99_ms"] == 5.0
    assert (
        "feed_complete_after_ms" in burst
        and "feed_complete_after_ms" not in burst["replication_off"]
    )
    assert "on/off: 0.50 of the creates/s without replication" in report.render(None, 1)


def test_the_off_hook_leaves_the_master_without_replication(tmp_path):
    """The hook, in a Django process of the master: no handler left on Produto's signals."""
    from apis_lab.bench import off_hook
    from apis_lab.catalogue import PRODUTOS

    check = (
        "import django; django.setup()\n"
        "from django.db.models.signals import post_save\n"
        "from produto.models import Produto\n"
        "print(post_save.has_listeners(Produto))\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "api_produtos.settings",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'p.sqlite3'}"}  # fmt: skip
    for extra, listens in (({}, "True"), (off_hook.environment(), "False")):
        result = subprocess.run(
            [sys.executable, "-c", check], cwd=PRODUTOS.directory, env={**env, **extra},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.stdout.strip().splitlines()[-1:] == [listens], result.stderr[-2000:]
