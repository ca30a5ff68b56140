"""`uv run apis chaos`: one round of every fault kind, seeded, against the real processes on a
RabbitMQ node, Redis and databases of the suite's own (on SQLite, and on PostgreSQL when
DATABASE_URL points there). Every invariant must hold; and a replica broken behind the
pipeline's back must be reported, so the checks are known to be able to fail."""

import json
import os
import subprocess

import pytest
from e2e_lab import APIS, run_apis

pytestmark = pytest.mark.e2e

DATABASE = "postgres" if os.environ.get("DATABASE_URL", "").startswith("postgres") else "sqlite"
KINDS = {
    "broker-restart", "connections-closed", "kill-relay", "kill-consumer",
    "kill-consumer-worker", "kill-web-worker", "kill-celery", "queue-deleted", "redis-down",
    "poison", "db-lock",
}  # fmt: skip


def chaos(*args: str, timeout: float = 280) -> tuple[subprocess.CompletedProcess, dict]:
    result = run_apis("chaos", "--json", "--database", DATABASE, *args, timeout=timeout)
    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr[-3000:]
    return result, json.loads(lines[-1])


@pytest.mark.timeout(420)
def test_one_seeded_round_of_every_fault_holds_every_invariant():
    result, report = chaos("--rounds", "1", "--seed", "20261128", "--duration", "600")
    print("\n" + result.stderr[-4000:])
    assert result.returncode == 0, result.stderr[-4000:]
    assert {"seed", "faults", "writes", "lost", "invariants_held"} <= set(report)
    assert report["seed"] == 20261128
    assert set(report["faults_by_kind"]) == KINDS and report["faults"] == len(KINDS)
    assert report["lost"] == 0 and report["invariants_held"] is True
    assert report["writes"] > 100  # the workload ran all along
    assert report["broker_down_write_max_ms"] < 2000  # writes never waited for the broker
    # The pipeline still works after the last heal: new writes reached the replica.
    assert report["schedule"][-1]["fault"] == "final"
    assert report["schedule"][-1]["converge_s"] is not None


@pytest.mark.any_database  # the checks of the suite itself, on whichever database
def test_a_replica_broken_behind_the_pipelines_back_is_reported():
    result, report = chaos(
        "--faults", "corrupt-replica", "--rounds", "1", "--seed", "1", "--converge-timeout", "3"
    )
    assert result.returncode == 1
    assert report["invariants_held"] is False
    assert any("not converged" in v and "1 rows differ" in v for v in report["violations"])


@pytest.mark.any_database
def test_nonsense_is_refused_in_one_line():
    result = subprocess.run(
        [APIS, "chaos", "--faults", "meteor"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2 and "unknown fault kinds ['meteor']" in result.stderr
    assert "Traceback" not in result.stderr
