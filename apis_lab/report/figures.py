"""The report's figures, drawn from `lab.json` with matplotlib's headless Agg backend: each one
saved as PNG and SVG in the report's folder."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: a CI runner, a server

import itertools
import re
import textwrap

import matplotlib.pyplot as plt
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

#: The patterns in the order every figure shows them, each with its colour and its name in the
#: report (Portuguese, as the report); a pattern not listed here (a new peer) comes after them,
#: with a colour of FALLBACK_COLOURS and its own name.
PATTERNS = ("stock", "project", "celery", "outbox-pattern", "jaiminho", "celery-outbox")
COLOURS = {
    "stock": "#d95f02",
    "project": "#1b9e77",
    "celery": "#7570b3",
    "outbox-pattern": "#e7298a",
    "jaiminho": "#66a61e",
    "celery-outbox": "#e6ab02",
    "ceiling": "#999999",
}
FALLBACK_COLOURS = ("#a6761d", "#1f78b4", "#b15928", "#6a3d9a")
LABELS = {
    "stock": "django-cqrs original",
    "project": "projeto (outbox)",
    "celery": "tarefa Celery por mudança",
    "outbox-pattern": "django-outbox-pattern",
    "jaiminho": "django-jaiminho",
    "celery-outbox": "django-celery-outbox",
}
#: The processes of a pipeline the CPU figure stacks, each with its colour and its name.
ROLES = (
    ("writer", "#4c72b0", "escritor (mestre)"),
    ("relay", "#dd8452", "relay"),
    ("broker", "#8c8c8c", "broker (RabbitMQ)"),
    ("consumer", "#55a868", "consumidor (réplica)"),
)
#: The keys of the bench's section that are not a pattern.
NOT_PATTERNS = {"n", "ceiling", "lags_ms", "lags_from", "burst"}
#: The matrix's outcomes, worst last: its colour and its legend.
OUTCOMES = (
    ("not-run", "#ffffff", "em branco: não sorteada para o padrão nesta rodada"),
    ("skipped", "#d9d9d9", "pulada: sem sentido para o padrão"),
    ("held", "#66c2a5", "nada perdido, convergiu"),
    ("stuck", "#fdd835", "nada perdido, não convergiu a tempo / aplicada errado"),
    ("lost", "#e34a33", "escritas confirmadas perdidas"),
)
FIGURES = ("throughput", "cpu", "lag", "timeline", "matrix")

# Same input, same SVG bytes (ids are otherwise random): the docs' figures diff cleanly.
matplotlib.rcParams["svg.hashsalt"] = "apis-lab"
matplotlib.rcParams["font.size"] = 9


def draw_all(data: dict, out: Path) -> dict[str, Path]:
    """Every figure, as `out/<name>.png` and `out/<name>.svg`; name → the PNG's path."""
    out.mkdir(parents=True, exist_ok=True)
    drawn = {}
    draws = {"throughput": throughput, "cpu": cpu, "lag": lag, "timeline": timeline,
             "matrix": matrix}  # fmt: skip
    for name in FIGURES:
        figure = draws[name](data)
        for suffix in ("png", "svg"):
            figure.savefig(out / f"{name}.{suffix}", dpi=110, bbox_inches="tight",
                           metadata={"Date": None} if suffix == "svg" else None)  # fmt: skip
        plt.close(figure)
        drawn[name] = out / f"{name}.png"
    return drawn


def patterns(section: dict) -> list[str]:
    """The patterns a section of the results holds (the bench's: those with figures of their
    own), the known ones in PATTERNS' order, then any other in the results' order."""
    found = [
        name
        for name, value in section.items()
        if name not in NOT_PATTERNS and isinstance(value, dict | list)
    ]
    return [n for n in PATTERNS if n in found] + [n for n in found if n not in PATTERNS]


def colour(name: str) -> str:
    if name in COLOURS:
        return COLOURS[name]
    return FALLBACK_COLOURS[sum(map(ord, name)) % len(FALLBACK_COLOURS)]


def label(name: str) -> str:
    return LABELS.get(name, name)


def _tick(name: str) -> str:
    """A pattern's name under its bar, in lines of a bar's width."""
    return textwrap.fill(label(name), 14, break_long_words=False)


def number(value: float, decimals: int = 0) -> str:
    """A number as the report's Portuguese reads it: 12.052 and 0,47 (not 12,052 and 0.47)."""
    return f"{value:,.{decimals}f}".translate(str.maketrans(",.", ".,"))


def throughput(data: dict):
    """Messages per second end to end of each pattern, beside the broker's own ceiling."""
    bench = data.get("bench") or {}
    names = patterns(bench)
    values = [bench[name]["msgs_per_s"] for name in names]
    ceiling = (bench.get("ceiling") or {}).get("msgs_per_s") or 0.0
    figure, axes = plt.subplots(figsize=(1.6 + 1.3 * (len(names) + 1), 3.4))
    bars = axes.bar(
        [_tick(n) for n in names] + ["broker\nsozinho"],
        [*values, ceiling],
        color=[colour(n) for n in names] + [COLOURS["ceiling"]],
    )
    for bar, value in zip(bars, [*values, ceiling], strict=True):
        share = (
            f"\n{number(100 * value / ceiling)}% do teto" if ceiling and value != ceiling else ""
        )
        axes.annotate(f"{number(value)}{share}", (bar.get_x() + bar.get_width() / 2, value),
                      ha="center", va="bottom", fontsize=8)  # fmt: skip
    if ceiling:
        axes.axhline(ceiling, color=COLOURS["ceiling"], linestyle="--", linewidth=1)
    axes.set_ylabel("msgs/s, da 1ª escrita à última linha na réplica")
    axes.set_ylim(0, max([ceiling, *values, 1.0]) * 1.3)
    axes.yaxis.set_major_formatter(lambda value, _: number(value))
    axes.set_title(f"Vazão, {number(bench.get('n') or 0)} criações por padrão")
    axes.spines[["top", "right"]].set_visible(False)
    return figure


def cpu(data: dict):
    """µs of CPU per replicated change of each pattern, stacked by process (writer, relay,
    broker, consumer), from `apis bench`'s `cpu_us_per_change`."""
    bench = data.get("bench") or {}
    names = [n for n in patterns(bench) if bench[n].get("cpu_us_per_change")]
    figure, axes = plt.subplots(figsize=(1.6 + 1.3 * max(len(names), 2), 3.6))
    axes.spines[["top", "right"]].set_visible(False)
    axes.set_title("Custo de CPU por mudança replicada, por processo")
    axes.set_ylabel("µs de CPU por mudança")
    if not names:
        axes.text(0.5, 0.5, "sem medida de CPU nesta execução\n(medida no /proc: só no Linux)",
                  ha="center", va="center", transform=axes.transAxes, color="#777777")  # fmt: skip
        axes.set_xticks([])
        return figure
    ticks = [_tick(n) for n in names]
    bottoms = [0.0] * len(names)
    for role, role_colour, role_label in ROLES:
        heights = [bench[n]["cpu_us_per_change"].get(role) or 0.0 for n in names]
        if not any(heights):
            continue
        axes.bar(ticks, heights, bottom=bottoms, color=role_colour, label=role_label,
                 edgecolor="white", linewidth=0.5)  # fmt: skip
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    for index, total in enumerate(bottoms):
        axes.annotate(number(total), (index, total), ha="center", va="bottom", fontsize=8)
    axes.set_ylim(0, max([*bottoms, 1.0]) * 1.2)
    axes.yaxis.set_major_formatter(lambda value, _: number(value))
    # Stacked in the order drawn, the bottom one last, beside the bars (not over a total).
    handles, texts = axes.get_legend_handles_labels()
    axes.legend(handles[::-1], texts[::-1], loc="upper left", bbox_to_anchor=(1.0, 1.0),
                fontsize=8, frameon=False)  # fmt: skip
    return figure


def lag(data: dict):
    """The distribution of the lag (row on the replica − commit on the master) as a CDF."""
    lags = (data.get("bench") or {}).get("lags_ms") or {}
    figure, axes = plt.subplots(figsize=(6.4, 3.4))
    for name in patterns(lags):
        values = sorted(max(v, 0.01) for v in lags[name])
        if not values:
            continue
        shares = [(i + 1) / len(values) for i in range(len(values))]
        axes.step(values, shares, where="post", color=colour(name), label=label(name))
    axes.set_xscale("log")
    axes.set_xlabel("atraso, ms (escala logarítmica)")
    axes.set_ylabel("fração das mudanças")
    axes.axhline(0.99, color="#bbbbbb", linewidth=0.8, linestyle=":")
    axes.set_ylim(0, 1.02)
    axes.yaxis.set_major_formatter(lambda value, _: number(value, 1))
    where = (data.get("bench") or {}).get("lags_from", "")
    axes.set_title("Distribuição do atraso" + (f" ({_where(where)})" if where else ""))
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="lower right")
    axes.spines[["top", "right"]].set_visible(False)
    return figure


def timeline(data: dict):
    """Per pattern: writes acknowledged per second and the replica's lag (the oldest
    acknowledged write not yet on the replica), each fault shaded from injection to heal."""
    chaos = data.get("chaos") or {}
    names = patterns(chaos) or ["project"]
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
        axes.set_ylabel("escritas/s")
        lagged = axes.twinx()
        lagged.plot(times, [s[3] for s in samples], color=colour(name), linewidth=1.2)
        lagged.set_ylabel("atraso da réplica, s", color=colour(name))
        lagged.yaxis.set_major_formatter(lambda value, _: number(value, 1))
        lost = chaos.get(name, {}).get("lost", 0)
        axes.set_title(f"{label(name)}: perdeu {lost}", loc="left", fontsize=9)
    rows[-1, 0].set_xlabel("segundos desde o início da execução")
    if kinds:
        figure.legend(handles=[Patch(color=shade[k], alpha=0.3, label=k) for k in kinds],
                      title="falha injetada (sombreada da injeção à cura)", title_fontsize=8,
                      loc="upper center", ncol=min(len(kinds), 5), frameon=False,
                      bbox_to_anchor=(0.5, 1.02))  # fmt: skip
    figure.tight_layout(rect=(0, 0, 1, 0.95))
    return figure


def _where(where: str) -> str:
    """`lags_from` of the bench (English, from the runner) as the figure says it."""
    steady = re.fullmatch(r"steady load, ([\d.]+) writes/s", where)
    if steady:
        return f"carga constante, {steady[1]} escritas/s"
    return {"throughput run": "execução de vazão"}.get(where, where)


def _timeline(chaos: dict, name: str) -> dict:
    return (chaos.get(name) or {}).get("timeline") or {"faults": [], "samples": []}


def outcome(run: dict | None, kind: str) -> tuple[str, str]:
    """The matrix's cell of a pattern's run for a fault kind: (outcome, text in the cell)."""
    if run is None:
        return "not-run", ""
    if kind in (run.get("skipped") or {}):
        return "skipped", "pulada"
    row = (run.get("by_fault") or {}).get(kind)
    if row is None:
        return "not-run", ""
    text = f"perdeu {row['lost']}\nparada {number(row['max_stall_s'], 1)} s"
    if row["lost"]:
        return "lost", text
    if row["stuck"] or row["wrong"]:
        return "stuck", text
    return "held", text


def matrix(data: dict):
    """Pattern × fault kind, each cell coloured by what happened to the acknowledged writes."""
    chaos = data.get("chaos") or {}
    names = patterns(chaos)
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
    axes.set_yticks(range(len(names)), [label(n) for n in names])
    axes.set_xticks([x - 0.5 for x in range(1, len(kinds))], minor=True)
    axes.set_yticks([y - 0.5 for y in range(1, len(names))], minor=True)
    axes.grid(which="minor", color="white", linewidth=2)
    axes.tick_params(which="minor", length=0)
    axes.set_title("Padrão × falha: o que aconteceu com as escritas confirmadas", pad=24)
    # A blank cell (a kind the seeded schedule did not draw for that pattern) gets its line in
    # the legend only when there is one: otherwise the reader would take it for a result.
    shown = [o for i, o in enumerate(OUTCOMES) if i or any(0 in row for row in grid)]
    legend = [Patch(facecolor=c, edgecolor="#999999", label=text) for _, c, text in shown]
    figure.legend(
        handles=legend, loc="lower center", ncol=2, frameon=False, bbox_to_anchor=(0.5, -0.16)
    )
    return figure
