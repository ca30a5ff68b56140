"""Reconciliation with the real processes: drift made in the feed's database by hand is repaired
by one `apis reconcile`, and by Celery beat on its own."""

import os
import subprocess

import httpx
import pytest
from e2e_lab import (
    API_KEY,
    APIS,
    REPO_ROOT,
    Databases,
    ServiceDatabase,
    delete_broker_objects,
    start_lab,
    wait_until,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def lab_with(tmp_path, rabbitmq_url, redis_url):
    started = []

    def start(**env: str):
        databases = Databases(tmp_path / str(len(started)))
        databases.tmp.mkdir()
        lab = start_lab(databases.tmp, rabbitmq_url, databases, **env)
        started.append((lab, databases))
        return lab

    yield start
    for lab, databases in started:
        lab.stop()
        delete_broker_objects(rabbitmq_url, lab.exchange, lab.broker_queues())
        databases.drop_all()


def populate(lab, count: int = 20) -> list[dict]:
    with httpx.Client(base_url=lab.produtos_url, headers={"X-API-Key": API_KEY}) as produtos:
        created = [
            produtos.post(
                "/api/produtos/", json={"sku": f"R-{n}", "nome": f"Nome {n}", "preco": n}
            ).json()
            for n in range(count)
        ]
    with httpx.Client(base_url=lab.feed_url) as feed:
        wait_until(lambda: feed.get("/api/feed/", params={"q": "R-"}).json()["count"] == count, 20)
    return created


def drift(lab, created: list[dict]) -> tuple[int, int, int, int]:
    """Delete a row, corrupt another, add one the master never had, bury a live one under a
    tombstone above the master's revision — behind the consumer's back."""
    feed_db = ServiceDatabase(lab.database_urls["feed"])
    gone, corrupted, buried = created[3]["id"], created[7]["id"], created[11]["id"]
    feed_db.execute([
        f"DELETE FROM feed_produtomirror WHERE id = {gone}",
        f"DELETE FROM feed_produtomirror WHERE id = {buried}",
        "INSERT INTO cqrs_replica_tombstone (cqrs_id, instance_pk, cqrs_revision, deleted_at) "
        f"VALUES ('produto', '{buried}', 5, '2026-01-01 00:00:00')",
        f"UPDATE feed_produtomirror SET nome = 'tampered', preco = 0 WHERE id = {corrupted}",
        "INSERT INTO feed_produtomirror (id, sku, nome, descricao, preco, estoque, ativo, "
        "criado_em, atualizado_em, cqrs_revision, cqrs_updated) VALUES (999999, 'GHOST', "
        "'ghost', '', 1, 0, TRUE, '2026-01-01 00:00:00', '2026-01-01 00:00:00', 5, "
        "'2026-01-01 00:00:00')",
    ])  # fmt: skip
    return gone, corrupted, 999999, buried


def repaired(lab, created: list[dict], gone: int, corrupted: int, ghost: int, buried: int) -> bool:
    with httpx.Client(base_url=lab.feed_url) as feed:
        if feed.get(f"/api/feed/{buried}").status_code != 200:
            return False
        back = feed.get(f"/api/feed/{gone}")
        fixed = feed.get(f"/api/feed/{corrupted}")
        return (
            back.status_code == 200
            and back.json()["sku"] == created[3]["sku"]
            and fixed.status_code == 200
            and fixed.json()["nome"] == created[7]["nome"]
            and fixed.json()["preco"] == created[7]["preco"]
            and feed.get(f"/api/feed/{ghost}").status_code == 404
        )


def test_one_apis_reconcile_repairs_deleted_corrupted_and_added_rows(lab_with):
    lab = lab_with()
    created = populate(lab)
    drifted = drift(lab, created)
    assert not repaired(lab, created, *drifted)

    result = subprocess.run(
        [APIS, "reconcile", "--replica-url", lab.feed_url, "--cqrs-id", "produto"],
        cwd=REPO_ROOT, env=lab.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert (
        "missing 2, stale 0, corrupted 1, extra 1, ahead 0 (revived 1); 4 repairs sent" in summary
    )
    wait_until(lambda: repaired(lab, created, *drifted), 20, what="the repairs")

    again = subprocess.run(
        [APIS, "reconcile", "--replica-url", lab.feed_url, "--json"],
        cwd=REPO_ROOT, env=lab.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert '"repairs_sent": 0' in again.stdout  # nothing left to repair


def test_celery_beat_repairs_drift_on_its_own_within_its_interval(lab_with):
    lab = lab_with(RECONCILE_INTERVAL="3")
    created = populate(lab)
    drifted = drift(lab, created)
    wait_until(lambda: repaired(lab, created, *drifted), 20, interval=0.25,
               what="beat's reconciliation")  # fmt: skip
    assert "outbox.reconcile_replica" in lab.output()


@pytest.mark.any_database  # the command's errors before any database
def test_apis_reconcile_says_so_when_the_feed_is_down(tmp_path):
    result = subprocess.run(
        [APIS, "reconcile", "--replica-url", "http://127.0.0.1:1"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PRODUTOS_ENV_FILE": str(tmp_path / "none")},
    )  # fmt: skip
    assert result.returncode != 0
    assert "is the replica running?" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.any_database  # the command's errors before any database
def test_apis_reconcile_names_the_cqrs_ids_it_knows(tmp_path):
    result = subprocess.run(
        [APIS, "reconcile", "--cqrs-id", "pedido", "--replica-url", "http://127.0.0.1:1"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PRODUTOS_ENV_FILE": str(tmp_path / "none")},
    )  # fmt: skip
    assert result.returncode != 0
    assert "no master model has CQRS_ID 'pedido' (have: produto)" in result.stderr
