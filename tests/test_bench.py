"""`uv run apis bench`: every pipeline replicates everything, and the report keeps its contract.
Timings are reported, never asserted (the machines are noisy)."""

import json
import os
import re
import subprocess

import pytest
from e2e_lab import APIS, REPO_ROOT

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.any_database,
]  # the database plays no part here: CI runs it in its SQLite pass only

PIPELINES = ("stock", "project", "celery")


def test_bench_json_contract(rabbitmq_url):
    database = "postgres" if os.environ.get("DATABASE_URL", "").startswith("postgres") else "sqlite"
    result = subprocess.run(
        [APIS, "bench", "--json", "-n", "300", "--runs", "2", "--steady-rate", "0", "--burst",
         "0", "--database", database],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=290,
        env={**os.environ, "RABBITMQ_URL": rabbitmq_url},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # ../shared/CONTRACT.md: n, the three pipelines, and the broker's ceiling.
    assert set(report) == {"n", *PIPELINES, "ceiling"}
    assert report["n"] == 300
    for pipeline in PIPELINES:
        assert set(report[pipeline]) == {
            "msgs_per_s", "lag_p50_ms", "lag_p99_ms", "cpu_us_per_change"
        }  # fmt: skip
        assert report[pipeline]["msgs_per_s"] > 0
        assert 0 <= report[pipeline]["lag_p50_ms"] <= report[pipeline]["lag_p99_ms"]
        # CPU per replicated change of each process, from /proc (this runs on Linux).
        cost = report[pipeline]["cpu_us_per_change"]
        assert set(cost) == {"writer", "relay", "broker", "consumer", "total"}
        assert cost["writer"] > 0 and cost["consumer"] > 0, cost
        assert cost["broker"] is not None and cost["broker"] > 0, cost  # the loopback node
        assert (cost["relay"] is None) == (pipeline == "stock"), cost  # stock has no relay
        parts = [cost[role] or 0 for role in ("writer", "relay", "broker", "consumer")]
        assert abs(sum(parts) - cost["total"]) < 0.5, cost
    assert set(report["ceiling"]) == {"msgs_per_s"} and report["ceiling"]["msgs_per_s"] > 0
    table = result.stderr  # the readable table, on stderr
    assert "2 run(s) each (median, min–max)" in table
    # Quorum queues (this broker has them) and the machine's "/" makes untyped queues classic:
    # every pipeline ran on a private node whose "/" makes stock's queue quorum too.
    assert 'whose "/" makes untyped queues quorum' in table, table[:2000]
    assert "quorum queues, " in table and "(stock:" not in table, table[:2000]
    # Median and spread of each pipeline, and its ratios to the ceiling and to stock.
    assert re.search(r"project\s+[\d,]+ \([\d,]+–[\d,]+\)", table), table[-3000:]
    assert re.search(r"project: [\d.]+ of the ceiling, [\d.]+x stock", table), table[-3000:]
    assert re.search(r"celery: [\d.]+ of the ceiling, [\d.]+x stock", table), table[-3000:]
    assert re.search(r"broker alone .*: [\d,]+ \([\d,]+–[\d,]+\) msgs/s", table), table[-3000:]
    assert re.search(r"celery\s+[\d,.]+\s+[\d,.]+\s+[\d,.]+\s+[\d,.]+\s+[\d,.]+$", table, re.M), (
        table[-3000:]
    )  # its row of the CPU-per-change table: writer, relay, broker, consumer, total
    print("\n" + table.split("apis bench —")[-1])


def test_bench_refuses_nonsense_and_a_missing_broker():
    bad = subprocess.run([APIS, "bench", "-n", "0"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "-n" in bad.stderr
    unknown = subprocess.run(
        [APIS, "bench", "--pipelines", "kafka"], capture_output=True, text=True, timeout=30
    )
    assert unknown.returncode == 2 and "--pipelines" in unknown.stderr
    down = subprocess.run(
        [APIS, "bench", "-n", "10"], capture_output=True, text=True, timeout=30,
        env={**os.environ, "RABBITMQ_URL": "amqp://admin:admin@127.0.0.1:1/"},
    )  # fmt: skip
    assert down.returncode == 1
    assert "docker compose up -d" in down.stderr
    assert "Traceback" not in down.stderr


def test_a_steady_run_leaves_its_warm_up_out_of_the_lags(rabbitmq_url, tmp_path):
    """The warm-up's writes are written and replicated like the others (the run waits for all),
    and only the ones after them are measured."""
    from apis_lab.bench import pipelines
    from apis_lab.bench.runner import Progress
    from apis_lab.databases import Databases

    databases = Databases(tmp_path, server_url="", prefix="testwarm")
    run = pipelines.run(
        pipelines.Project(consumers=1), pipelines.Workload(n=15, rate=100, warmup=10),
        rabbitmq_url, databases, tmp_path, Progress(enabled=False),
    )  # fmt: skip
    assert run.n == 25  # every write replicated (and its CPU counted per change)
    assert len(run.lags_ms) == 15 and all(lag > 0 for lag in run.lags_ms)


def test_stock_runs_on_the_queue_type_its_brokers_default_vhost_gives_it(rabbitmq_url, tmp_path):
    """django-cqrs declares its queue without a type (and on "/", whatever vhost its URL names):
    the machine's "/" makes it classic; on a node whose "/" defaults to quorum — what the bench
    starts to compare quorum queues like for like — it is quorum, and stock replicates there as
    on the machine's broker (nothing of ours declares its queue first, with other arguments)."""
    from apis_lab.bench import pipelines
    from apis_lab.bench.runner import Progress
    from apis_lab.broker_objects import untyped_queue_type
    from apis_lab.databases import Databases
    from apis_lab.rabbit_nodes import RabbitNode

    assert untyped_queue_type(rabbitmq_url) == "classic"
    databases = Databases(tmp_path, server_url="", prefix="teststock")
    workload = pipelines.Workload(n=10, rate=100)
    run = pipelines.run(
        pipelines.Stock(), workload, rabbitmq_url, databases, tmp_path, Progress(enabled=False)
    )
    assert run.n == 10 and len(run.lags_ms) == 10
    node = RabbitNode().start()
    try:
        node.recreate_vhost("quorum")
        assert untyped_queue_type(node.url) == "quorum"
        run = pipelines.run(
            pipelines.Stock(queue_type="quorum"), workload, node.url, databases, tmp_path,
            Progress(enabled=False),
        )  # fmt: skip
        assert run.n == 10 and len(run.lags_ms) == 10
    finally:
        node.stop()


def test_the_bench_moves_to_a_quorum_node_only_when_stock_would_otherwise_run_on_classic(
    rabbitmq_url,
):
    """A private node only for a bench with stock, quorum queues, and a broker on this machine
    whose "/" makes untyped queues classic; a broker elsewhere is what its user measures."""
    from apis_lab.bench.runner import BenchOptions, _stock_wants_quorum_vhost

    assert _stock_wants_quorum_vhost(BenchOptions(queue_type="quorum"), rabbitmq_url)
    assert _stock_wants_quorum_vhost(BenchOptions(), rabbitmq_url)  # quorum: this broker has it
    assert not _stock_wants_quorum_vhost(BenchOptions(queue_type="classic"), rabbitmq_url)
    without_stock = BenchOptions(queue_type="quorum", pipelines=("project", "celery"))
    assert not _stock_wants_quorum_vhost(without_stock, rabbitmq_url)
    with_a_peer = BenchOptions(queue_type="quorum", pipelines=("stock", "outbox-pattern"))
    assert not _stock_wants_quorum_vhost(with_a_peer, rabbitmq_url)  # its queues stay classic
    elsewhere = "amqp://guest:guest@192.0.2.1:5672/"  # TEST-NET-1: never asked
    assert not _stock_wants_quorum_vhost(BenchOptions(queue_type="quorum"), elsewhere)
