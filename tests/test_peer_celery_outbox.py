"""The lab's `celery-outbox` peer (django-celery-outbox 0.4, issue 23): its pieces (which faults
mean something for it, the Celery topology and relay flags its docs give, what a bench run
cleans up) and one small end-to-end run: changes written under the master's overlay become rows
of the library's outbox in their transaction, its relay sends them, the replica's Celery worker
applies them.

Its master always runs on PostgreSQL (the library needs SKIP LOCKED): the end-to-end test makes
a database of its own on DATABASE_URL's server, or the machine's."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
import structlog

from apis_lab.bench import pipelines
from apis_lab.bench.runner import Progress
from apis_lab.catalogue import PRODUTOS
from apis_lab.chaos.runner import ChaosOptions, plan
from apis_lab.databases import Databases
from apis_lab.lab_run import service_environment
from apis_lab.peers import celery_outbox, peer_module
from apis_lab.peers.celery_outbox_conf import NO_TELEMETRY, celery_settings, configure_structlog

# --- the pieces -----------------------------------------------------------------------------


def test_the_registry_finds_both_sides():
    module = peer_module("celery-outbox")
    assert module.Bench().name == module.Chaos.name == "celery-outbox"


def test_faults_that_mean_nothing_for_it_are_skipped_and_the_others_scheduled():
    kinds, skipped = plan(ChaosOptions(), celery_outbox.Chaos.roles, celery_outbox.Chaos.skips)
    for kind in ("broker-restart", "blackhole", "kill-relay", "kill-consumer", "pause-relay",
                 "db-lock", "connections-closed", "pause-broker", "disk-alarm"):  # fmt: skip
        assert kind in kinds
    # No Celery beat or Redis role, none of the project's consumer machinery, and a deleted
    # queue only the project's reconcile would repair.
    for kind in ("kill-celery", "redis-down", "kill-consumer-worker", "poison", "crash-loop",
                 "queue-deleted", "migrate-killed", "pause-consumer-worker"):  # fmt: skip
        assert skipped.get(kind), kind
    assert not celery_outbox.Chaos.must_not_lose  # a loss is a measured result


def test_the_celery_topology_is_the_one_its_getting_started_gives():
    conf = celery_settings("p.produtos.tasks", "p.feed.tasks")
    queues = {queue.name: queue for queue in conf["CELERY_TASK_QUEUES"]}
    assert set(queues) == {"p.produtos.tasks", "p.feed.tasks"}
    for name, queue in queues.items():
        assert (queue.exchange.name, queue.exchange.type, queue.routing_key) == (
            name, "topic", name,
        )  # fmt: skip
        assert queue.queue_arguments == {"x-queue-type": "quorum"}
    assert conf["CELERY_TASK_CREATE_MISSING_QUEUES"] is False
    assert conf["CELERY_BROKER_NATIVE_DELAYED_DELIVERY_QUEUE_TYPE"] == "quorum"
    assert NO_TELEMETRY == {"MONITORING_METRICS_ENABLED": False}


def test_the_relay_keeps_its_retries_and_order_and_has_a_liveness_file(tmp_path):
    command = celery_outbox.relay_command(tmp_path / "alive")
    assert command[1:3] == [str(PRODUTOS.directory / "manage.py"), "celery_outbox_relay"]
    flags = dict(zip(command[3::2], command[4::2], strict=True))
    assert flags == {"--batch-size": "500", "--idle-time": "0.1",
                     "--liveness-file": str(tmp_path / "alive")}  # fmt: skip
    # --max-retries, --backoff-time, --publish-concurrency: its defaults (5, 120 s, 1).


def test_a_bench_run_deletes_the_delayed_delivery_objects_only_when_it_made_them():
    bench = celery_outbox.Bench()
    env = {"CQRS_QUEUE": "q"}
    assert not set(celery_outbox.DELAYED_DELIVERY) & set(bench.queues(env))
    assert f"{bench.prefix}feed.tasks" in bench.queues(env)
    bench.delayed_delivery_ours = True
    assert set(celery_outbox.DELAYED_DELIVERY) <= set(bench.queues(env))
    assert len(celery_outbox.DELAYED_DELIVERY) == 29


def test_the_library_logs_through_the_standard_logging(caplog):
    configure_structlog()
    with caplog.at_level(logging.INFO, logger="lab.peer"):
        structlog.get_logger("lab.peer").debug("celery_outbox_relay_idle")
        structlog.get_logger("lab.peer").info("celery_outbox_batch_processed", published=3)
    assert [r.getMessage() for r in caplog.records] == [
        "event='celery_outbox_batch_processed' published=3"
    ]


# --- end to end -----------------------------------------------------------------------------

MASTER_SCRIPT = """
import json, django
django.setup()
import sentry_sdk
from django.db import transaction
from django_celery_outbox import metrics, statsd
from django_celery_outbox.models import CeleryOutbox
from django_tools.outbox.models import OutboxEvent
from produto.models import Produto

try:
    with transaction.atomic():
        Produto.objects.create(sku="ROLLED-BACK", nome="x", preco=1)
        raise RuntimeError
except RuntimeError:
    pass
after_rollback = CeleryOutbox.objects.count()
produto = Produto.objects.create(sku="A", nome="a", preco="1.50")
produto.nome = "b"
produto.save()
produto.delete()
metrics.increment("messages.enqueued")
print(json.dumps({
    "after_rollback": after_rollback,
    "rows": list(CeleryOutbox.objects.order_by("id").values_list("task_name", "args", "options")),
    "project_outbox": OutboxEvent.objects.count(),
    "statsd_made": statsd._statsd is not None,
    "sentry_active": sentry_sdk.get_client().is_active(),
}))
"""


@pytest.mark.e2e
@pytest.mark.any_database  # its master is on PostgreSQL whatever DATABASE_URL says
@pytest.mark.timeout(120)
def test_changes_go_through_the_library_in_their_transaction_and_reach_the_replica(
    tmp_path, rabbitmq_url
):
    # The master: a change and its task row commit (or roll back) together; nothing goes to
    # this project's outbox; no metric or Sentry client is made.
    server = Databases(tmp_path, server_url=celery_outbox.postgres_server(), prefix="testcob")
    try:
        env, _ = service_environment(
            "produtos", tmp_path, rabbitmq_url, server,
            DJANGO_SETTINGS_MODULE=celery_outbox.MASTER_SETTINGS, CELERY_QUEUE_PREFIX="t.",
        )  # fmt: skip
        result = subprocess.run(
            [sys.executable, "-c", MASTER_SCRIPT], cwd=PRODUTOS.directory, env=env,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        server.drop_all()
    assert result.returncode == 0, result.stderr[-3000:]
    master = json.loads(result.stdout.strip().splitlines()[-1])
    assert master["after_rollback"] == 0
    assert master["project_outbox"] == 0
    assert not master["statsd_made"] and not master["sentry_active"]
    bodies = [json.loads(args[0]) for _, args, _ in master["rows"]]
    assert [name for name, _, _ in master["rows"]] == ["replica.apply_event"] * 3
    assert [options["queue"] for _, _, options in master["rows"]] == ["t.feed.tasks"] * 3
    assert [(b["signal_type"], b["instance_data"]["cqrs_revision"]) for b in bodies] == [
        ("SAVE", 0), ("SAVE", 1), ("DELETE", 2),
    ]  # fmt: skip

    # The pipeline: the bench's writer, the library's relay, the replica's Celery worker.
    bench = celery_outbox.Bench()
    run = pipelines.run(
        bench, pipelines.Workload(n=40, batch=10), rabbitmq_url,
        Databases(tmp_path, server_url="", prefix="testcob"),
        tmp_path, Progress(enabled=False),
    )  # fmt: skip
    assert run.n == 40 and len(run.lags_ms) == 40  # every create replicated, each with its lag
    assert bench.master_database is None or not _exists(bench.master_database)


def _exists(databases: Databases) -> bool:
    import psycopg

    with psycopg.connect(databases.server_url) as conn:
        return bool(
            conn.execute(
                "SELECT count(*) FROM pg_database WHERE datname = ANY(%s)", (databases.created,)
            ).fetchone()[0]
        )
