"""The report's HTML page: one file, every figure embedded as a base64 PNG (it opens offline,
from a mail attachment or a CI artefact), the numbers behind them in tables, and how the run was
made (command, commit, date, seed)."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from apis_lab.bench.report import percentile
from apis_lab.report.figures import FIGURES, ROLES, label, number, patterns

CAPTIONS = {
    "throughput": "Vazão de ponta a ponta de cada padrão ao lado do teto do broker (RabbitMQ "
    "sozinho, mesma máquina, mesma execução).",
    "cpu": "Custo de CPU por mudança replicada, por processo de cada padrão (escritor no "
    "mestre, relay, broker, consumidor na réplica, cada um com seus processos filhos), lido do "
    "/proc do início da escrita à última linha na réplica. O broker é o nó RabbitMQ inteiro: num "
    "broker compartilhado, o tráfego dos outros clientes entra na conta dele.",
    "lag": "Distribuição do atraso (linha na réplica − commit no mestre), função de distribuição "
    "acumulada; a linha pontilhada marca o p99.",
    "timeline": "Linha do tempo de cada padrão sob falhas: escritas confirmadas por segundo "
    "(cinza) e atraso da réplica (a espera da escrita confirmada mais antiga ainda ausente), cada "
    "falha sombreada da injeção à cura. Depois de cada cura as escritas param até a réplica "
    "convergir (ou até o prazo): um atraso que sobe sem parar é uma escrita que nunca chegou.",
    "matrix": "Padrão × falha: o que aconteceu com as escritas confirmadas.",
}
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; color: #222;
       padding: 0 1em; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
code { background: #f4f4f4; padding: 0 0.2em; }
.lost { color: #b30000; font-weight: bold; }
"""


def build(data: dict, figures: dict[str, Path], out: Path) -> Path:
    """`out/index.html` from the run's data and the figures' PNG files."""
    meta = data.get("meta") or {}
    parts = [
        "<!doctype html>",
        '<html lang="pt-BR"><head><meta charset="utf-8">',
        "<title>apis lab: padrões de replicação medidos</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>apis lab: padrões de replicação, medidos lado a lado</h1>",
        "<p>Gerado por <code>"
        + escape(meta.get("command", "apis lab"))
        + "</code> em "
        + escape(meta.get("created", "?"))
        + ", commit <code>"
        + escape(meta.get("commit", "?"))
        + "</code>, semente "
        + escape(str(meta.get("seed", "?")))
        + ", banco "
        + escape(meta.get("database", "sqlite"))
        + ".</p>",
        _chaos_summary(data.get("chaos") or {}),
    ]
    for name in FIGURES:
        if name in figures:
            parts.append(_figure(name, figures[name]))
        if name == "cpu":
            parts.append(_cpu_table(data.get("bench") or {}))
        if name == "lag":
            parts.append(_bench_table(data.get("bench") or {}))
        if name == "matrix":
            parts.append(_chaos_tables(data.get("chaos") or {}))
    parts.append("</body></html>")
    page = out / "index.html"
    page.write_text("\n".join(parts), encoding="utf-8")
    return page


def _figure(name: str, png: Path) -> str:
    encoded = base64.b64encode(png.read_bytes()).decode()
    return (
        f'<figure id="{name}"><img alt="{escape(CAPTIONS[name])}" '
        f'src="data:image/png;base64,{encoded}">'
        f"<figcaption>{escape(CAPTIONS[name])} Também em "
        f'<a href="{name}.svg">SVG</a> e <a href="{name}.png">PNG</a>.</figcaption></figure>'
    )


def _chaos_summary(chaos: dict) -> str:
    if not chaos:
        return ""
    items = []
    for name in patterns(chaos):
        run = chaos[name]
        lost = {k: n for k, n in (run.get("lost_by_fault") or {}).items() if n}
        what = ", ".join(f"{n} em {k}" for k, n in lost.items()) or "nada"
        css = ' class="lost"' if run.get("lost") else ""
        items.append(
            f"<li><b>{escape(label(name))}</b>: {run.get('writes', 0)} escritas confirmadas, "
            f"<span{css}>perdeu {run.get('lost', 0)}</span> ({escape(what)})</li>"
        )
    return "<h2>Resumo sob falhas</h2><ul>" + "".join(items) + "</ul>"


def _bench_table(bench: dict) -> str:
    names = patterns(bench)
    if not names:
        return ""
    lags = bench.get("lags_ms") or {}

    def distribution(name: str) -> str:
        values = lags.get(name) or []
        if not values:
            return "<td></td><td></td>"
        return (
            f"<td>{number(percentile(values, 50), 1)}</td>"
            f"<td>{number(percentile(values, 99), 1)}</td>"
        )

    rows = "".join(
        f"<tr><td>{escape(label(n))}</td><td>{number(bench[n]['msgs_per_s'])}</td>"
        f"<td>{number(bench[n]['lag_p50_ms'], 1)}</td><td>{number(bench[n]['lag_p99_ms'], 1)}</td>"
        f"{distribution(n)}</tr>"
        for n in names
    )
    ceiling = (bench.get("ceiling") or {}).get("msgs_per_s", 0)
    where = escape(bench.get("lags_from", "a figura"))
    return (
        "<table><tr><th>padrão</th><th>msgs/s (vazão)</th><th>atraso p50 na vazão (ms)</th>"
        f"<th>atraso p99 na vazão (ms)</th><th>atraso p50, {where} (ms)</th>"
        f"<th>atraso p99, {where} (ms)</th></tr>{rows}<tr><td>broker sozinho</td>"
        f"<td>{number(ceiling)}</td><td></td><td></td><td></td><td></td></tr></table>"
    )


def _chaos_tables(chaos: dict) -> str:
    parts = []
    for name in patterns(chaos):
        run = chaos[name]
        rows = "".join(
            f"<tr><td>{escape(kind)}</td><td>{row['count']}</td><td>{row['writes']}</td>"
            f"<td>{row['lost']}</td><td>{row['wrong']}</td><td>{row['stuck']}</td>"
            f"<td>{number(row['max_stall_s'], 1)}</td><td>"
            + ("-" if row["converge_max_s"] is None else number(row["converge_max_s"], 1))
            + "</td></tr>"
            for kind, row in (run.get("by_fault") or {}).items()
        )
        skipped = ", ".join(f"{k} ({why})" for k, why in (run.get("skipped") or {}).items())
        parts.append(
            f"<h3>{escape(label(name))}</h3><table><tr><th>falha</th><th>vezes</th>"
            "<th>escritas confirmadas durante</th><th>perdidas</th><th>aplicadas errado</th>"
            "<th>presas</th><th>maior parada (s)</th><th>convergiu em até (s)</th></tr>"
            f"{rows}</table><p>Puladas: {escape(skipped or 'nenhuma')}.</p>"
        )
    return "".join(parts)


def _cpu_table(bench: dict) -> str:
    """The numbers of the CPU figure: µs per change of each process, and their total."""
    names = [n for n in patterns(bench) if bench[n].get("cpu_us_per_change")]
    if not names:
        return ""

    def cell(value) -> str:
        return "<td>-</td>" if value is None else f"<td>{number(value, 1)}</td>"

    rows = "".join(
        f"<tr><td>{escape(label(n))}</td>"
        + "".join(cell(bench[n]["cpu_us_per_change"].get(role)) for role, _, _ in ROLES)
        + cell(bench[n]["cpu_us_per_change"].get("total"))
        + "</tr>"
        for n in names
    )
    head = "".join(f"<th>{escape(text)}</th>" for _, _, text in ROLES)
    return (
        f"<table><tr><th>padrão (µs de CPU por mudança)</th>{head}<th>total</th></tr>{rows}"
        "</table><p>-: o padrão não tem esse processo (ou não foi possível lê-lo).</p>"
    )
