"""`uv run apis bench`: both pipelines replicate everything and the report keeps its contract.
Timings are reported, never asserted (the machines are noisy)."""

import json
import os
import re
import subprocess

import pytest
from e2e_lab import APIS, REPO_ROOT

pytestmark = pytest.mark.e2e


def test_bench_json_contract(rabbitmq_url):
    database = "postgres" if os.environ.get("DATABASE_URL", "").startswith("postgres") else "sqlite"
    result = subprocess.run(
        [APIS, "bench", "--json", "-n", "300", "--steady-rate", "0", "--burst", "0",
         "--database", database],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "RABBITMQ_URL": rabbitmq_url},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report) == {"n", "stock", "project"}
    assert report["n"] == 300
    for pipeline in ("stock", "project"):
        assert set(report[pipeline]) == {"msgs_per_s", "lag_p50_ms", "lag_p99_ms"}
        assert report[pipeline]["msgs_per_s"] > 0
        assert 0 <= report[pipeline]["lag_p50_ms"] <= report[pipeline]["lag_p99_ms"]
    assert "project / stock end to end" in result.stderr  # the readable table, on stderr
    assert "celery / stock end to end" in result.stderr  # the third column
    ceiling = re.search(r"broker alone .*: ([\d,]+) msgs/s end to end = [\d.]+x", result.stderr)
    assert ceiling, result.stderr[-3000:]  # the broker's own ceiling, measured in the same run
    assert int(ceiling.group(1).replace(",", "")) > 0
    print("\n" + result.stderr.split("apis bench —")[-1])


def test_bench_refuses_nonsense_and_a_missing_broker():
    bad = subprocess.run([APIS, "bench", "-n", "0"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "-n" in bad.stderr
    down = subprocess.run(
        [APIS, "bench", "-n", "10"], capture_output=True, text=True, timeout=30,
        env={**os.environ, "RABBITMQ_URL": "amqp://admin:admin@127.0.0.1:1/"},
    )  # fmt: skip
    assert down.returncode == 1
    assert "docker compose up -d" in down.stderr
    assert "Traceback" not in down.stderr
