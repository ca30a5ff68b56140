"""The bench's report of the steady-load runs: medians over `--runs` in the JSON (the contract's
`steady_lag_p50_ms` / `steady_lag_p99_ms`) and the spread in the table. No processes."""

from apis_lab.bench.report import BenchReport, PipelineResult, PipelineRun
from apis_lab.bench.runner import steady_warmup


def _run(lags: list[float]) -> PipelineRun:
    return PipelineRun(name="project", n=len(lags), seconds=1.0, write_seconds=1.0, lags_ms=lags)


def test_steady_lags_are_medians_over_the_runs_with_their_spread():
    report = BenchReport(n=3, database="sqlite", queue_type="quorum", consumers=1)
    report.pipelines["project"] = PipelineResult("project", [_run([1.0, 2.0, 3.0])])
    report.steady_n, report.steady_rate = 100, 200.0
    # p99 of each run (the 99th of 100): 4, 9 and 6 ms; p50: 1, 2 and 3 ms.
    report.steady["project"] = PipelineResult(
        "project",
        [_run([1.0] * 98 + [4.0] * 2), _run([2.0] * 98 + [9.0] * 2), _run([3.0] * 98 + [6.0] * 2)],
    )

    figures = report.as_json()["project"]

    assert figures["steady_lag_p99_ms"] == 6.0
    assert figures["steady_lag_p50_ms"] == 2.0
    assert "6.0 (4.0–9.0)" in report.render(None, 100)
    assert "one per transaction\n" in report.render(None, 100)  # no warm-up said: none left out
    report.steady_warmup = 200
    assert "one per transaction, after 200 left out (warm-up)" in report.render(None, 100)


def test_the_steady_section_prints_its_own_cpu_per_change():
    report = BenchReport(n=3, database="sqlite", queue_type="quorum", consumers=1)
    report.pipelines["project"] = PipelineResult("project", [_run([1.0, 2.0, 3.0])])
    report.steady_n, report.steady_rate = 100, 200.0
    cpu_s = {"writer": 0.1, "relay": 0.05, "broker": 0.06, "consumer": 0.12}
    steady = PipelineRun("project", 100, 1.0, 1.0, [1.0] * 100, cpu_s=cpu_s)
    report.steady["project"] = PipelineResult("project", [steady])
    text = report.render(None, 100)
    section = text.split("2. Steady load")[1]
    assert "CPU per replicated change" in section
    assert "1,000.0" in section and "1,200.0" in section  # writer, consumer: µs per change
    assert "window:" not in section  # the notes once, under the throughput table


def test_the_steady_warm_up_is_a_second_of_writes_at_least_20():
    assert steady_warmup(200.0) == 200 and steady_warmup(5.0) == 20


def test_the_header_says_when_stock_runs_on_another_kind_of_queue_than_the_others():
    report = BenchReport(n=3, database="sqlite", queue_type="quorum", consumers=1)
    report.pipelines["stock"] = PipelineResult("stock", [_run([1.0, 2.0, 3.0])])
    assert "quorum queues (stock: classic, as django-cqrs declares it on this broker)" in (
        report.render(None, 1)
    )
    report.stock_queue_type = "quorum"  # the broker's "/" made its untyped queue quorum
    assert "(stock:" not in report.render(None, 1)
    report.queue_type = report.stock_queue_type = "classic"
    assert "(stock:" not in report.render(None, 1)


def test_no_steady_run_no_steady_keys():
    report = BenchReport(n=3, database="sqlite", queue_type="quorum", consumers=1)
    report.pipelines["stock"] = PipelineResult("stock", [_run([1.0, 2.0, 3.0])])

    assert "steady_lag_p99_ms" not in report.as_json()["stock"]


def test_the_bench_gives_up_on_rows_that_stopped_coming(monkeypatch, tmp_path):
    """A pipeline that lost messages (a peer library does, with no fault) fails the run once
    nothing more arrives for STALL_S after its writer finished, not at the whole deadline."""
    import subprocess
    import time
    from types import SimpleNamespace

    import pytest

    from apis_lab.bench import pipelines
    from apis_lab.bench.runner import Progress

    monkeypatch.setattr(pipelines, "STALL_S", 0.5)
    writer = SimpleNamespace(process=subprocess.Popen(["true"]))
    writer.process.wait(timeout=10)
    feed = SimpleNamespace(scalar=lambda sql: 7)
    started = time.monotonic()
    with pytest.raises(pipelines.BenchError, match="7 of 10 replicated, and no more for 0s"):
        pipelines._wait_for_replica(
            "peer", 10, writer, feed, tmp_path / "peer.log", Progress(enabled=False)
        )
    assert time.monotonic() - started < 30  # the deadline would have been 120 s
