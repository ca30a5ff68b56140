"""The bench's report of the steady-load runs: medians over `--runs` in the JSON (the contract's
`steady_lag_p50_ms` / `steady_lag_p99_ms`) and the spread in the table. No processes."""

from apis_lab.bench.report import BenchReport, PipelineResult, PipelineRun


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


def test_no_steady_run_no_steady_keys():
    report = BenchReport(n=3, database="sqlite", queue_type="quorum", consumers=1)
    report.pipelines["stock"] = PipelineResult("stock", [_run([1.0, 2.0, 3.0])])

    assert "steady_lag_p99_ms" not in report.as_json()["stock"]
