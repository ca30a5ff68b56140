"""What `apis bench` measured, typed: runs, their spread, and the two ways to show it (a table
for people, the contract's JSON object for scripts)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from apis_lab.bench.cpu import ROLES, per_change_us


@dataclass(frozen=True)
class PipelineRun:
    """One run of one pipeline: N rows, first write → last row on the replica, and the lag of
    each row (applied on the replica − committed on the master)."""

    name: str
    n: int
    seconds: float
    write_seconds: float
    lags_ms: list[float]
    #: CPU seconds each role's processes spent in the run's window (apis_lab.bench.cpu); None
    #: where it could not be read; empty when this machine cannot measure it.
    cpu_s: dict[str, float | None] = field(default_factory=dict)

    @property
    def cpu_us_per_change(self) -> dict[str, float | None]:
        return per_change_us(self.cpu_s, self.n)

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

    def cpu_us_per_change(self) -> dict[str, float | None]:
        """µs of CPU per replicated change of each role (median over the runs; None: the
        pipeline has no such process, or it could not be read) and their `total`; empty when
        no run could measure it."""
        measured = [run.cpu_us_per_change for run in self.runs if run.cpu_s]
        if not measured:
            return {}
        result: dict[str, float | None] = {}
        for role in [r for r in ROLES if any(r in run for run in measured)]:
            values = [run[role] for run in measured if run.get(role) is not None]
            result[role] = statistics.median(values) if values else None
        result["total"] = sum(v for v in result.values() if v is not None)
        return result

    def as_json(self) -> dict:
        report: dict = {
            "msgs_per_s": round(self.msgs_per_s.median, 1),
            "lag_p50_ms": round(self.lag(50), 1),
            "lag_p99_ms": round(self.lag(99), 1),
        }
        cost = self.cpu_us_per_change()
        if cost:
            report["cpu_us_per_change"] = {
                role: None if cost.get(role) is None else round(cost[role], 1)
                for role in (*ROLES, "total")
            }
        return report


@dataclass
class BurstResult:
    total: int
    clients: int
    write_seconds: float
    complete_after_seconds: float
    errors: int
    latencies_ms: list[float] = field(default_factory=list)
    #: False: the same burst with the master writing no outbox row (apis_lab/bench/off_hook).
    replication: bool = True

    @property
    def writes_per_s(self) -> float:
        return self.total / self.write_seconds if self.write_seconds else 0.0

    def latency(self, p: float) -> float:
        return percentile(self.latencies_ms, p)

    def as_json(self) -> dict:
        report = {
            "writes_per_s": round(self.writes_per_s, 1),
            "latency_p50_ms": round(self.latency(50), 1),
            "latency_p99_ms": round(self.latency(99), 1),
            "errors": self.errors,
        }
        if self.replication:
            report["feed_complete_after_ms"] = round(self.complete_after_seconds * 1000, 1)
        return report


@dataclass
class BenchReport:
    n: int
    database: str
    queue_type: str
    consumers: int
    #: What stock's untyped queue was on the broker (its "/" vhost's default queue type).
    stock_queue_type: str = "classic"
    ceiling: list[float] = field(default_factory=list)  # msgs/s of each run
    ceiling_n: int = 0
    pipelines: dict[str, PipelineResult] = field(default_factory=dict)
    steady: dict[str, PipelineResult] = field(default_factory=dict)
    steady_n: int = 0
    steady_rate: float = 0.0
    steady_warmup: int = 0  # writes before the measured ones, left out of the lags
    burst: BurstResult | None = None
    #: The same burst with replication off (no outbox row): `burst`'s price is the ratio.
    burst_off: BurstResult | None = None

    @property
    def burst_ratio(self) -> float | None:
        """Creates/s of the REST burst with replication on over the same with it off."""
        if self.burst is None or self.burst_off is None or not self.burst_off.writes_per_s:
            return None
        return self.burst.writes_per_s / self.burst_off.writes_per_s

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
        if self.burst is not None:
            burst = {"total": self.burst.total, "clients": self.burst.clients,
                     **self.burst.as_json()}  # fmt: skip
            if self.burst_off is not None:
                burst["replication_off"] = self.burst_off.as_json()
                ratio = self.burst_ratio
                burst["on_off_ratio"] = None if ratio is None else round(ratio, 3)
            report["burst"] = burst
        return report

    def render(self, rate: float | None, batch: int) -> str:
        runs = max((len(r.runs) for r in self.pipelines.values()), default=0)
        pace = f"{rate:g} writes/s" if rate else "as fast as the writer can"
        # django-cqrs declares its queue without a type: the broker's "/" decides, and a quorum
        # queue delivers only once its log is on disk — a different kind of queue is said.
        stock_other = "stock" in self.pipelines and self.stock_queue_type != self.queue_type
        stock_note = f" (stock: {self.stock_queue_type}, as django-cqrs declares it on this broker)"
        lines = [
            f"apis bench — database {self.database}, {self.queue_type} queues"
            + (stock_note if stock_other else "")
            + f", {self.consumers} consumer worker(s), {runs} run(s) each (median, min–max)",
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
        lines += ["", *render_cpu(self.pipelines)]
        if self.steady:
            warmup = (
                f", after {self.steady_warmup} left out (warm-up)" if self.steady_warmup else ""
            )
            lines += [
                "",
                f"2. Steady load: {self.steady_n} creates at {self.steady_rate:g} writes/s, "
                f"one per transaction{warmup}",
                "",
                *_table(_rows(self.steady, lag_spread=True)),
                "",
                # At a low rate every change wakes every process: its price per change is not
                # the throughput run's, and it is what the lag's tail queues behind.
                *render_cpu(self.steady, notes=False),
            ]
        if self.burst is not None:
            lines += ["", *self._render_burst()]
        return "\n".join(lines)

    def _render_burst(self) -> list[str]:
        burst, off = self.burst, self.burst_off
        lines = [
            f"3. REST burst on `apis up` (project): {burst.total} POST /api/produtos/ from "
            f"{burst.clients} clients" + (", with replication on and off" if off else ""),
            "",
        ]
        rows = [("replication", "writes/s", "latency p50 ms", "latency p99 ms", "errors")]
        for result in [burst, off] if off else [burst]:
            rows.append((
                "on" if result.replication else "off (no outbox row)",
                f"{result.writes_per_s:,.0f}",
                f"{result.latency(50):,.1f}",
                f"{result.latency(99):,.1f}",
                str(result.errors),
            ))  # fmt: skip
        lines += ["   " + line for line in _table(rows)]
        lines.append(
            f"   the feed had them all {burst.complete_after_seconds * 1000:,.0f} ms after the "
            "last write returned (replication on)"
        )
        if self.burst_ratio is not None:
            lines.append(
                f"   on/off: {self.burst_ratio:.2f} of the creates/s without replication; "
                f"latency p50 {burst.latency(50) / max(off.latency(50), 1e-9):.2f}x, p99 "
                f"{burst.latency(99) / max(off.latency(99), 1e-9):.2f}x"
            )
        return lines


def render_cpu(results: dict[str, PipelineResult], notes: bool = True) -> list[str]:
    """The CPU-per-change table: one column per role, one row per pipeline; `notes`: with the
    lines that say how it is measured (once per report is enough)."""
    title = "   CPU per replicated change, µs (median of the runs; each process with its children)"
    costs = {name: result.cpu_us_per_change() for name, result in results.items()}
    if not any(costs.values()):
        return [title + ": n/a (measured from /proc: Linux only, with psutil)"]
    rows = [("pipeline", *ROLES, "total")]
    for name, cost in costs.items():
        if not cost:
            rows.append((name, *["n/a"] * (len(ROLES) + 1)))
            continue
        rows.append((name, *(_us(cost, role) for role in ROLES), f"{cost['total']:,.1f}"))
    lines = [title, "", *("   " + line for line in _table(rows))]
    if not notes:
        return lines
    lines.append(
        "   window: from just before the writer starts (its own start-up left out) to the last "
        "row on the replica"
    )
    if any(cell in ("-", "n/a") for row in rows for cell in row):
        lines.append(
            "   -: the pipeline has no such process; n/a: it could not be read (the broker: not "
            "on this machine, or not found)"
        )
    lines.append(
        "   broker: the whole RabbitMQ node's CPU; on a shared broker, other clients' traffic "
        "counts too"
    )
    return lines


def _us(cost: dict[str, float | None], role: str) -> str:
    if role not in cost:
        return "-"
    return "n/a" if cost[role] is None else f"{cost[role]:,.1f}"


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
