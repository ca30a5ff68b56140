"""The report's figures, drawn from `lab.json` with matplotlib's headless Agg backend: each one
saved as PNG and SVG in the report's folder."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: a CI runner, a server

import itertools

import matplotlib.pyplot as plt
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

#: The patterns in the order every figure shows them, each with its colour.
PATTERNS = ("stock", "project", "celery")
COLOURS = {"stock": "#d95f02", "project": "#1b9e77", "celery": "#7570b3", "ceiling": "#999999"}
LABELS = {
    "stock": "stock django-cqrs",
    "project": "project (outbox)",
    "celery": "Celery task per change",
}
#: The matrix's outcomes, worst last: its colour and its legend.
OUTCOMES = (
    ("not-run", "#ffffff", "not run"),
    ("skipped", "#d9d9d9", "skipped: no meaning for the pattern"),
    ("held", "#66c2a5", "nothing lost, converged"),
    ("stuck", "#fdd835", "nothing lost, not converged in time / applied wrongly"),
    ("lost", "#e34a33", "acknowledged writes lost"),
)
FIGURES = ("throughput", "lag", "timeline", "matrix")

# Same input, same SVG bytes (ids are otherwise random): the docs' figures diff cleanly.
matplotlib.rcParams["svg.hashsalt"] = "apis-lab"
matplotlib.rcParams["font.size"] = 9


def draw_all(data: dict, out: Path) -> dict[str, Path]:
    """Every figure, as `out/<name>.png` and `out/<name>.svg`; name → the PNG's path."""
    out.mkdir(parents=True, exist_ok=True)
    drawn = {}
    for name, draw in (
        ("throughput", throughput),
        ("lag", lag),
        ("timeline", timeline),
        ("matrix", matrix),
    ):
        figure = draw(data)
        for suffix in ("png", "svg"):
            figure.savefig(out / f"{name}.{suffix}", dpi=110, bbox_inches="tight",
                           metadata={"Date": None} if suffix == "svg" else None)  # fmt: skip
        plt.close(figure)
        drawn[name] = out / f"{name}.png"
    return drawn


def _patterns(section: dict) -> list[str]:
    return [name for name in PATTERNS if name in section]


def throughput(data: dict):
    """Messages per second end to end of each pattern, beside the broker's own ceiling."""
    bench = data.get("bench") or {}
    names = _patterns(bench)
    values = [bench[name]["msgs_per_s"] for name in names]
    ceiling = (bench.get("ceiling") or {}).get("msgs_per_s") or 0.0
    figure, axes = plt.subplots(figsize=(6.4, 3.4))
    bars = axes.bar(
        [LABELS[n].replace(" ", "\n", 1) for n in names] + ["broker\nalone"],
        [*values, ceiling],
        color=[COLOURS[n] for n in names] + [COLOURS["ceiling"]],
    )
    for bar, value in zip(bars, [*values, ceiling], strict=True):
        share = f"\n{value / ceiling:.0%} of the ceiling" if ceiling and value != ceiling else ""
        axes.annotate(f"{value:,.0f}{share}", (bar.get_x() + bar.get_width() / 2, value),
                      ha="center", va="bottom", fontsize=8)  # fmt: skip
    if ceiling:
        axes.axhline(ceiling, color=COLOURS["ceiling"], linestyle="--", linewidth=1)
    axes.set_ylabel("msgs/s, first write → last replica row")
    axes.set_ylim(0, max([ceiling, *values, 1.0]) * 1.3)
    axes.set_title(f"Throughput, {bench.get('n', '?')} creates per pattern")
    axes.spines[["top", "right"]].set_visible(False)
    return figure


def lag(data: dict):
    """The distribution of the lag (row on the replica − commit on the master) as a CDF."""
    lags = (data.get("bench") or {}).get("lags_ms") or {}
    figure, axes = plt.subplots(figsize=(6.4, 3.4))
    for name in _patterns(lags):
        values = sorted(max(v, 0.01) for v in lags[name])
        if not values:
            continue
        shares = [(i + 1) / len(values) for i in range(len(values))]
        axes.step(values, shares, where="post", color=COLOURS[name], label=LABELS[name])
    axes.set_xscale("log")
    axes.set_xlabel("lag, ms (log scale)")
    axes.set_ylabel("share of the changes")
    axes.axhline(0.99, color="#bbbbbb", linewidth=0.8, linestyle=":")
    axes.set_ylim(0, 1.02)
    where = (data.get("bench") or {}).get("lags_from", "")
    axes.set_title("Lag distribution" + (f" ({where})" if where else ""))
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="lower right")
    axes.spines[["top", "right"]].set_visible(False)
    return figure


def timeline(data: dict):
    """Per pattern: writes acknowledged per second and the replica's lag (the oldest
    acknowledged write not yet on the replica), each fault shaded from injection to heal."""
    chaos = data.get("chaos") or {}
    names = _patterns(chaos) or ["project"]
    figure, rows = plt.subplots(len(names), 1, figsize=(8.0, 2.3 * len(names)), squeeze=False)
    kinds = sorted({f["fault"] for n in names for f in _timeline(chaos, n)["faults"]} - {"final"})
    palette = plt.get_cmap("tab10")
    shade = {kind: palette(i % 10) for i, kind in enumerate(kinds)}
    for axes, name in zip(rows[:, 0], names, strict=True):
        line = _timeline(chaos, name)
        samples = line["samples"]
        times = [s[0] for s in samples]
        rates = [0.0] + [
            (b[1] - a[1]) / (b[0] - a[0]) if b[0] > a[0] else 0.0
            for a, b in itertools.pairwise(samples)
        ]
        for fault in line["faults"]:
            if fault["fault"] == "final" or fault["start_s"] is None:
                continue
            axes.axvspan(fault["start_s"], fault["heal_s"], color=shade[fault["fault"]], alpha=0.3,
                         linewidth=0)  # fmt: skip
        axes.plot(times, rates, color="#555555", linewidth=0.8)
        axes.set_ylabel("writes/s")
        lagged = axes.twinx()
        lagged.plot(times, [s[3] for s in samples], color=COLOURS.get(name, "black"), linewidth=1.2)
        lagged.set_ylabel("replica lag, s", color=COLOURS.get(name, "black"))
        lost = chaos.get(name, {}).get("lost", 0)
        axes.set_title(f"{LABELS.get(name, name)}: lost {lost}", loc="left", fontsize=9)
    rows[-1, 0].set_xlabel("seconds since the start of the run")
    if kinds:
        figure.legend(handles=[Patch(color=shade[k], alpha=0.3, label=k) for k in kinds],
                      loc="upper center", ncol=min(len(kinds), 5), frameon=False,
                      bbox_to_anchor=(0.5, 1.02))  # fmt: skip
    figure.tight_layout(rect=(0, 0, 1, 0.95))
    return figure


def _timeline(chaos: dict, name: str) -> dict:
    return (chaos.get(name) or {}).get("timeline") or {"faults": [], "samples": []}


def outcome(run: dict | None, kind: str) -> tuple[str, str]:
    """The matrix's cell of a pattern's run for a fault kind: (outcome, text in the cell)."""
    if run is None:
        return "not-run", ""
    if kind in (run.get("skipped") or {}):
        return "skipped", "skipped"
    row = (run.get("by_fault") or {}).get(kind)
    if row is None:
        return "not-run", ""
    text = f"lost {row['lost']}\nstall {row['max_stall_s']:.1f}s"
    if row["lost"]:
        return "lost", text
    if row["stuck"] or row["wrong"]:
        return "stuck", text
    return "held", text


def matrix(data: dict):
    """Pattern × fault kind, each cell coloured by what happened to the acknowledged writes."""
    chaos = data.get("chaos") or {}
    names = _patterns(chaos)
    kinds: list[str] = []
    for name in names:
        run = chaos[name]
        for kind in [*(run.get("by_fault") or {}), *(run.get("skipped") or {})]:
            if kind not in kinds:
                kinds.append(kind)
    codes = [o[0] for o in OUTCOMES]
    grid = [[codes.index(outcome(chaos[n], k)[0]) for k in kinds] for n in names]
    figure, axes = plt.subplots(figsize=(1.2 + 1.3 * max(len(kinds), 1), 1.0 + 0.7 * len(names)))
    colours = ListedColormap([o[1] for o in OUTCOMES])
    if names and kinds:
        axes.imshow(grid, cmap=colours, vmin=0, vmax=len(OUTCOMES) - 1, aspect="auto")
        for i, name in enumerate(names):
            for j, kind in enumerate(kinds):
                axes.text(j, i, outcome(chaos[name], kind)[1], ha="center", va="center",
                          fontsize=7)  # fmt: skip
    axes.xaxis.tick_top()
    axes.set_xticks(range(len(kinds)), kinds, fontsize=8)
    axes.set_yticks(range(len(names)), [LABELS[n] for n in names])
    axes.set_xticks([x - 0.5 for x in range(1, len(kinds))], minor=True)
    axes.set_yticks([y - 0.5 for y in range(1, len(names))], minor=True)
    axes.grid(which="minor", color="white", linewidth=2)
    axes.tick_params(which="minor", length=0)
    axes.set_title("Pattern × fault: what happened to the acknowledged writes", pad=24)
    legend = [Patch(facecolor=c, edgecolor="#999999", label=label) for _, c, label in OUTCOMES[1:]]
    figure.legend(
        handles=legend, loc="lower center", ncol=2, frameon=False, bbox_to_anchor=(0.5, -0.16)
    )
    return figure
