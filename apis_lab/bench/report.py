"""What `apis bench` measured, typed: runs, their spread, and the two ways to show it (a table
for people, the contract's JSON object for scripts)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PipelineRun:
    """One run of one pipeline: N rows, first write → last row on the replica, and the lag of
    each row (applied on the replica − committed on the master)."""

    name: str
    n: int
    seconds: float
    write_seconds: float
    lags_ms: list[float]

    @property
    def msgs_per_s(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else 0.0

    @property
    def writes_per_s(self) -> float:
        return self.n / self.write_seconds if self.write_seconds > 0 else 0.0

    def percentile(self, p: float) -> float:
        return percentile(self.lags_ms, p)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
    return ordered[index]


@dataclass(frozen=True)
class Spread:
    """Min, median and max of a figure over the runs."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else 0.0

    def __str__(self) -> str:
        if len(self.values) < 2:
            return f"{self.median:,.0f}"
        return f"{self.median:,.0f} ({min(self.values):,.0f}–{max(self.values):,.0f})"


@dataclass
class PipelineResult:
    """Every run of one pipeline; the figures are medians over the runs."""

    name: str
    runs: list[PipelineRun] = field(default_factory=list)

    @property
    def msgs_per_s(self) -> Spread:
        return Spread(tuple(run.msgs_per_s for run in self.runs))

    @property
    def writes_per_s(self) -> Spread:
        return Spread(tuple(run.writes_per_s for run in self.runs))

    def lag(self, p: float) -> float:
        return self.lag_spread(p).median

    def lag_spread(self, p: float) -> Spread:
        """The p-th percentile of the lag of each run."""
        return Spread(tuple(run.percentile(p) for run in self.runs))

    def as_json(self) -> dict[str, float]:
        return {
            "msgs_per_s": round(self.msgs_per_s.median, 1),
            "lag_p50_ms": round(self.lag(50), 1),
            "lag_p99_ms": round(self.lag(99), 1),
        }


@dataclass
class BurstResult:
    total: int
    clients: int
    write_seconds: float
    complete_after_seconds: float
    errors: int
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def writes_per_s(self) -> float:
        return self.total / self.write_seconds if self.write_seconds else 0.0


@dataclass
class BenchReport:
    n: int
    database: str
    queue_type: str
    consumers: int
    ceiling: list[float] = field(default_factory=list)  # msgs/s of each run
    ceiling_n: int = 0
    pipelines: dict[str, PipelineResult] = field(default_factory=dict)
    steady: dict[str, PipelineResult] = field(default_factory=dict)
    steady_n: int = 0
    steady_rate: float = 0.0
    burst: BurstResult | None = None

    @property
    def ceiling_spread(self) -> Spread:
        return Spread(tuple(self.ceiling))

    def as_json(self) -> dict:
        """The contract's object: n, each pipeline's figures, the broker's ceiling."""
        report: dict = {"n": self.n}
        for name, result in self.pipelines.items():
            report[name] = result.as_json()
            steady = self.steady.get(name)
            if steady is not None and steady.runs:  # medians over the steady runs (--runs)
                report[name]["steady_lag_p50_ms"] = round(steady.lag(50), 2)
                report[name]["steady_lag_p99_ms"] = round(steady.lag(99), 2)
        report["ceiling"] = {"msgs_per_s": round(self.ceiling_spread.median, 1)}
        return report

    def render(self, rate: float | None, batch: int) -> str:
        runs = max((len(r.runs) for r in self.pipelines.values()), default=0)
        pace = f"{rate:g} writes/s" if rate else "as fast as the writer can"
        lines = [
            f"apis bench — database {self.database}, {self.queue_type} queues, "
            f"{self.consumers} consumer worker(s), {runs} run(s) each (median, min–max)",
            "",
            f"1. Throughput: {self.n} creates per pipeline, {pace}, {batch} per transaction",
            "",
            *_table(_rows(self.pipelines)),
        ]
        ceiling = self.ceiling_spread.median
        stock = self.pipelines.get("stock")
        lines += [
            "",
            f"   broker alone (raw pika, {self.ceiling_n} persistent messages to a "
            f"{self.queue_type} queue, no confirms, no database): {self.ceiling_spread} msgs/s",
        ]
        for name, result in self.pipelines.items():
            median = result.msgs_per_s.median
            ratios = [f"{median / ceiling:.2f} of the ceiling" if ceiling else ""]
            if stock is not None and name != "stock" and stock.msgs_per_s.median:
                ratios.append(f"{median / stock.msgs_per_s.median:.1f}x stock")
            lines.append(f"   {name}: " + ", ".join(r for r in ratios if r))
        if self.steady:
            lines += [
                "",
                f"2. Steady load: {self.steady_n} creates at {self.steady_rate:g} writes/s, "
                "one per transaction",
                "",
                *_table(_rows(self.steady, lag_spread=True)),
            ]
        if self.burst is not None:
            burst = self.burst
            lines += [
                "",
                f"3. REST burst on `apis up` (project): {burst.total} POST /api/produtos/ from "
                f"{burst.clients} clients",
                "",
                f"   {burst.writes_per_s:,.0f} writes/s ({burst.write_seconds:.2f} s, "
                f"{burst.errors} errors), write latency p50 "
                f"{percentile(burst.latencies_ms, 50):,.1f} ms, p99 "
                f"{percentile(burst.latencies_ms, 99):,.1f} ms; the feed had them all "
                f"{burst.complete_after_seconds * 1000:,.0f} ms after the last write returned",
            ]
        return "\n".join(lines)


def _rows(results: dict[str, PipelineResult], lag_spread: bool = False) -> list[tuple[str, ...]]:
    def lag(r: PipelineResult, p: float) -> str:
        spread = r.lag_spread(p)
        if not lag_spread or len(spread.values) < 2:
            return f"{spread.median:,.1f}"
        return f"{spread.median:,.1f} ({min(spread.values):,.1f}–{max(spread.values):,.1f})"

    return [
        ("pipeline", "msgs/s e2e", "writes/s", "lag p50 ms", "lag p99 ms"),
        *(
            (r.name, str(r.msgs_per_s), str(r.writes_per_s), lag(r, 50), lag(r, 99))
            for r in results.values()
        ),
    ]


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        cells = [
            cell.rjust(width) if column else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells))
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return lines
