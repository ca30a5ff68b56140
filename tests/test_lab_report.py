"""`apis lab`'s report, built from canned data (no processes): every figure written as PNG and
SVG, the page self-contained (nothing fetched from the network), and — in Chromium — every
figure of the page rendered. Plus one short run of the fault suite against stock django-cqrs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from e2e_lab import run_apis

from apis_lab.report import figures
from apis_lab.report.runner import build

pytestmark = pytest.mark.any_database

CHROMIUM = "/usr/bin/chromium"


def _chaos(pipeline: str, lost: int, skipped: dict[str, str]) -> dict:
    samples = [[t / 2, 15 * t, 3 if 10 <= t < 20 else 0, 2.5 if 10 <= t < 20 else 0.05]
               for t in range(60)]  # fmt: skip
    row = {"count": 1, "writes": 40, "lost": lost, "wrong": 0, "stuck": int(bool(lost)),
           "max_stall_s": 3.2, "converge_max_s": None if lost else 0.8}  # fmt: skip
    return {
        "seed": 2207, "pipeline": pipeline, "writes": 800, "lost": lost,
        "lost_by_fault": {"broker-restart": lost, "kill-consumer": 0},
        "skipped": skipped,
        "by_fault": {"broker-restart": row, "kill-consumer": {**row, "lost": 0, "stuck": 0}},
        "timeline": {
            "faults": [
                {"fault": "broker-restart", "start_s": 5.0, "heal_s": 9.0, "settled_s": 10.0},
                {"fault": "kill-consumer", "start_s": 15.0, "heal_s": 17.0, "settled_s": 18.0},
                {"fault": "final", "start_s": 28.0, "heal_s": 28.0, "settled_s": 28.5},
            ],
            "samples": samples,
        },
    }  # fmt: skip


CANNED = {
    "meta": {"command": "uv run apis lab --quick", "commit": "abc1234", "seed": 2207,
             "created": "2026-12-06 21:00 UTC", "database": "sqlite"},
    "bench": {
        "n": 2000,
        "stock": {"msgs_per_s": 950.0, "lag_p50_ms": 2.1, "lag_p99_ms": 9.0,
                  "cpu_us_per_change": {"writer": 310.0, "relay": None, "broker": 95.0,
                                        "consumer": 640.0, "total": 1045.0}},
        "project": {"msgs_per_s": 5700.0, "lag_p50_ms": 4.0, "lag_p99_ms": 12.0,
                    "cpu_us_per_change": {"writer": 120.0, "relay": 40.0, "broker": 30.0,
                                          "consumer": 110.0, "total": 300.0}},
        "celery": {"msgs_per_s": 390.0, "lag_p50_ms": 6.0, "lag_p99_ms": 40.0},
        # A peer, and a pipeline the report has never heard of: shown all the same.
        "jaiminho": {"msgs_per_s": 700.0, "lag_p50_ms": 5.0, "lag_p99_ms": 30.0,
                     "cpu_us_per_change": {"writer": 200.0, "relay": 90.0, "broker": 90.0,
                                           "consumer": 600.0, "total": 980.0}},
        "kafka-someday": {"msgs_per_s": 2000.0, "lag_p50_ms": 3.0, "lag_p99_ms": 8.0},
        "ceiling": {"msgs_per_s": 12000.0},
        "lags_from": "steady load, 200 writes/s",
        "lags_ms": {"stock": [1.0, 2.0, 3.0], "project": [2.0, 4.0, 9.0],
                    "celery": [5.0, 6.0, 50.0], "jaiminho": [3.0, 5.0, 30.0]},
    },
    "chaos": {
        "stock": _chaos("stock", 7, {"kill-relay": "the pipeline has no relay"}),
        "project": _chaos("project", 0, {}),
        "celery": _chaos("celery", 0, {"kill-consumer": "the pipeline has no consumer"}),
        "outbox-pattern": _chaos("outbox-pattern", 3, {}),
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    return build(json.loads(json.dumps(CANNED)), tmp_path_factory.mktemp("lab"))


def test_every_figure_is_written_as_png_and_svg(report):
    for name in figures.FIGURES:
        for suffix in ("png", "svg"):
            path = report.parent / f"{name}.{suffix}"
            assert path.stat().st_size > 1000, path
    assert (report.parent / "matrix.png").read_bytes().startswith(b"\x89PNG")


def test_the_page_is_self_contained_and_says_what_was_lost(report):
    html = report.read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html, re.I)
    assert html.count('src="data:image/png;base64,') == len(figures.FIGURES)
    assert "perdeu 7" in html and "abc1234" in html and "kill-relay" in html
    # Every pipeline of the results, the peers with their names, the CPU per change in a table.
    assert "django-jaiminho" in html and "kafka-someday" in html
    assert "<b>django-outbox-pattern</b>" in html and "perdeu 3" in html
    assert "escritor (mestre)" in html and "1.045,0" in html


def test_the_figures_speak_portuguese_and_show_every_pipeline():
    bench = CANNED["bench"]
    assert figures.patterns(bench) == ["stock", "project", "celery", "jaiminho", "kafka-someday"]
    assert figures.patterns(CANNED["chaos"])[-1] == "outbox-pattern"
    assert figures.number(12052.4) == "12.052" and figures.number(0.466, 2) == "0,47"
    texts = {}
    for name in ("throughput", "cpu", "lag", "matrix"):
        figure = getattr(figures, name)(CANNED)
        figure.canvas.draw()  # the tick labels are set when drawn
        texts[name] = " ".join(
            t.get_text() for t in figure.findobj(match=lambda a: hasattr(a, "get_text"))
        ).replace("-\n", "-")  # a long name under its bar breaks after a hyphen
        figures.plt.close(figure)
    assert "Vazão" in texts["throughput"] and "do teto" in texts["throughput"]
    assert "django-jaiminho" in texts["throughput"] and "kafka-someday" in texts["throughput"]
    assert "µs de CPU por mudança" in texts["cpu"] and "consumidor (réplica)" in texts["cpu"]
    assert "1.045" in texts["cpu"] and "kafka" not in texts["cpu"]  # no CPU measured: no bar
    assert "Distribuição do atraso (carga constante, 200 escritas/s)" in texts["lag"]
    assert "perdeu 7" in texts["matrix"] and "django-outbox-pattern" in texts["matrix"]
    for english in ("Throughput", "of the ceiling", "lost ", "share of", "skipped"):
        assert not any(english in text for text in texts.values()), english


def test_the_matrix_colours_each_cell_by_what_happened():
    chaos = CANNED["chaos"]
    assert figures.outcome(chaos["stock"], "broker-restart")[0] == "lost"
    assert figures.outcome(chaos["project"], "broker-restart")[0] == "held"
    assert figures.outcome(chaos["celery"], "kill-consumer")[0] == "skipped"
    assert figures.outcome(None, "kill-consumer")[0] == "not-run"


def _matrix_text(data: dict) -> str:
    figure = figures.matrix(data)
    figure.canvas.draw()
    text = " ".join(t.get_text() for t in figure.findobj(match=lambda a: hasattr(a, "get_text")))
    figures.plt.close(figure)
    return text


def test_a_blank_cell_of_the_matrix_is_explained_in_its_legend_only_when_there_is_one():
    # The project's run did not draw kill-relay, which stock's skipped: a blank cell.
    assert "em branco: não sorteada" in _matrix_text(CANNED)
    alone = {"chaos": {"project": CANNED["chaos"]["project"]}}
    assert "em branco" not in _matrix_text(alone)


@pytest.mark.e2e
def test_every_figure_renders_in_chromium(report):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install -y chromium` (as .ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"],
            timeout=20_000,
        )  # fmt: skip
        try:
            page = browser.new_page()
            requests: list[str] = []
            page.on("request", lambda request: requests.append(request.url))
            page.goto(report.as_uri(), wait_until="load")
            sizes = page.eval_on_selector_all(
                "img, svg",
                "els => els.map(e => e.tagName === 'IMG' ? (e.complete && e.naturalWidth) "
                ": e.getBoundingClientRect().width)",
            )
        finally:
            browser.close()
    assert len(sizes) == len(figures.FIGURES) and all(size > 0 for size in sizes), sizes
    assert all(url.startswith(("file:", "data:")) for url in requests), requests


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_stock_django_cqrs_under_a_broker_restart_is_measured_not_failed():
    # One restart (--rounds 1), not as many as 30 s hold: a restart usually loses writes, and
    # each one then waits out the whole --converge-timeout for writes that never come.
    result = run_apis(
        "chaos", "--pipeline", "stock", "--duration", "30", "--rounds", "1", "--faults",
        "broker-restart", "--seed", "7", "--converge-timeout", "10", "--quick", "--json",
        timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["pipeline"] == "stock"
    assert report["by_fault"]["broker-restart"]["count"] == 1
    assert report["timeline"]["samples"] and report["timeline"]["faults"]
    assert "kill-relay" not in report["faults"]
