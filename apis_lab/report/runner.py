"""`uv run apis lab [--quick] [--out DIR]`: the bench, then the fault suite against every
pattern, all with one seed; the data in `DIR/lab.json`, then the report built from it.

Progress goes out as lines (a bar of the steps done, and what each step says); the report's
path is the last line."""

from __future__ import annotations

import datetime
import json
import subprocess  # nosec B404 # git, for the commit the report names
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from apis_lab.report import figures, page

SEED = 2207
#: Every pattern the lab compares: this project, stock django-cqrs, the seed's Celery task per
#: change, and the peer outbox libraries (apis_lab/peers), in the report's order.
PATTERNS = figures.PATTERNS
#: `--quick`: the kinds every pattern gets (those without meaning for one are listed skipped).
QUICK_FAULTS = ("broker-restart", "connections-closed", "kill-consumer", "kill-relay")
#: At most this many lag samples per pattern in lab.json (the CDF needs no more).
LAG_SAMPLES = 2000


@dataclass(frozen=True)
class LabOptions:
    quick: bool = False
    out: Path = Path("var/lab")
    seed: int = SEED
    database: str = "sqlite"

    @property
    def bench_n(self) -> int:
        return 2000 if self.quick else 20000

    @property
    def bench_runs(self) -> int:
        return 1 if self.quick else 3

    @property
    def chaos_seconds(self) -> float:
        return 40.0 if self.quick else 120.0

    @property
    def faults(self) -> tuple[str, ...] | None:
        return QUICK_FAULTS if self.quick else None  # None: every kind

    def command(self) -> str:
        return "uv run apis lab" + (" --quick" if self.quick else "") + f" --out {self.out}"


class Progress:
    """A bar of the steps done and the current step's last line."""

    def __init__(self, steps: int, write: Callable[[str], None]) -> None:
        self.steps, self.done, self.write = steps, 0, write
        self.started = time.monotonic()

    def bar(self) -> str:
        filled = round(20 * self.done / self.steps)
        return f"[{'#' * filled}{'.' * (20 - filled)}] {self.done}/{self.steps}"

    def say(self, line: str) -> None:
        self.write(f"{self.bar()} {time.monotonic() - self.started:5.0f}s  {line}")

    def step_done(self, line: str) -> None:
        self.done += 1
        self.say(line)


def run(options: LabOptions, write: Callable[[str], None] = print) -> Path:
    """Measure, save `lab.json`, build the report; returns the page's path."""
    progress = Progress(1 + len(PATTERNS) + 1, write)
    data: dict = {"meta": _meta(options)}
    progress.say(f"bench: n={options.bench_n}, {options.bench_runs} run(s) of each pattern…")
    data["bench"] = measure_bench(options)
    progress.step_done(
        "bench: "
        + ", ".join(f"{n} {data['bench'][n]['msgs_per_s']:,.0f}" for n in PATTERNS)
        + f" msgs/s; broker alone {data['bench']['ceiling']['msgs_per_s']:,.0f}"
    )
    data["chaos"] = {}
    for name in PATTERNS:
        progress.say(f"chaos {name}: {options.chaos_seconds:g}s of faults…")
        report = measure_chaos(options, name, lambda line, n=name: progress.say(f"{n}: {line}"))
        data["chaos"][name] = report
        lost = {k: v for k, v in report["lost_by_fault"].items() if v}
        progress.step_done(
            f"chaos {name}: {report['writes']} writes acknowledged, lost {report['lost']}"
            + (f" {lost}" if lost else "")
        )
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "lab.json").write_text(json.dumps(data, indent=1))
    path = build(data, options.out)
    progress.step_done(f"report: {len(figures.FIGURES)} figures (PNG and SVG) in {options.out}")
    return path


def build(data: dict, out: Path) -> Path:
    """The report (figures and page) from the data alone."""
    drawn = figures.draw_all(data, out)
    return page.build(data, drawn, out)


def measure_bench(options: LabOptions) -> dict:
    """`apis bench`'s JSON object, plus the lag of every change (sampled) for the CDF."""
    from apis_lab.bench.runner import BenchOptions
    from apis_lab.bench.runner import run as bench_run

    steady_rate = 200.0
    report = bench_run(
        BenchOptions(n=options.bench_n, runs=options.bench_runs, database=options.database,
                     steady_rate=steady_rate, steady_n=600 if options.quick else 1000, burst=0,
                     pipelines=PATTERNS)
    )  # fmt: skip
    result = report.as_json()
    source = report.steady or report.pipelines
    result["lags_from"] = (
        f"steady load, {steady_rate:g} writes/s" if report.steady else "throughput run"
    )
    result["lags_ms"] = {
        name: _sample([lag for run in source[name].runs for lag in run.lags_ms]) for name in source
    }
    return result


def _sample(values: list[float]) -> list[float]:
    ordered = sorted(values)
    if len(ordered) <= LAG_SAMPLES:
        return [round(v, 3) for v in ordered]
    step = len(ordered) / LAG_SAMPLES
    return [round(ordered[int(i * step)], 3) for i in range(LAG_SAMPLES)] + [round(ordered[-1], 3)]


def measure_chaos(options: LabOptions, pipeline: str, say: Callable[[str], None]) -> dict:
    """One run of the fault suite against one pattern: its JSON object."""
    from apis_lab.chaos.faults import FAULTS
    from apis_lab.chaos.runner import ChaosOptions
    from apis_lab.chaos.runner import run as chaos_run

    report = chaos_run(
        ChaosOptions(
            duration=options.chaos_seconds,
            seed=options.seed,
            faults=options.faults or tuple(FAULTS),
            pipeline=pipeline,
            database=options.database,
            quick=options.quick,
            # A pattern that loses writes never converges: it must not hold the run that long.
            converge_timeout=90.0 if pipeline == "project" else 20.0,
        ),
        say=say,
    )
    return report.as_dict()


def _meta(options: LabOptions) -> dict:
    try:
        commit = subprocess.run(  # nosec B603 B607 # git from PATH, a fixed command
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    return {
        "command": options.command(),
        "commit": commit,
        "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seed": options.seed,
        "database": options.database,
        "quick": options.quick,
        "python": sys.version.split()[0],
    }
