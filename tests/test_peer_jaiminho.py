"""django-jaiminho as a pipeline of the lab (apis_lab/peers/jaiminho*.py, issue 23): the pieces'
logic, and one end-to-end run on the real broker — every change of the master stored as
jaiminho's call in its transaction, nothing reaching the replica while `events_relay` is down,
everything (creates, an update, a delete) once it runs, and its table emptied behind it."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from e2e_lab import PRODUTOS_DIR, Databases, ServiceDatabase, service_environment, wait_until

from apis_lab.bench.pipelines import BenchError, _wait_for_consumer
from apis_lab.broker_objects import delete_broker_objects
from apis_lab.chaos.runner import ChaosOptions, plan
from apis_lab.peers import jaiminho, jaiminho_replication
from apis_lab.peers.jaiminho_replication import (
    DELETE,
    SAVE,
    decode,
    delete_message,
    encode,
    mirror_fields,
    queue_name,
    save_message,
)

DATA = {
    "id": 7, "sku": "SKU-7", "nome": "Produto 7", "descricao": "", "preco": "19.90",
    "estoque": 3, "ativo": True, "criado_em": "2026-01-01 00:00:00+00:00",
    "atualizado_em": "2026-01-01 00:00:01+00:00", "cqrs_revision": 2,
    "cqrs_updated": "2026-01-01 00:00:01+00:00",
}  # fmt: skip


# --- the pieces -----------------------------------------------------------------------------


def test_messages_round_trip_as_json_and_map_onto_the_mirror():
    save = decode(encode(save_message(7, DATA)))
    assert save["signal"] == SAVE and save["id"] == 7
    fields = mirror_fields(save["data"])
    assert fields["preco"] == Decimal("19.90") and fields["cqrs_revision"] == 2
    assert "id" not in fields  # the key is the message's, not a column to set
    assert decode(encode(delete_message(7, 3))) == {
        "signal": DELETE, "id": 7, "data": {"id": 7, "cqrs_revision": 3},
    }  # fmt: skip


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"signal": "DROP", "id": 1, "data": {}}',
        b'{"signal": "SAVE", "id": "1", "data": {}}',
        b'{"signal": "SAVE", "id": 1, "data": {"sku": "x"}}',  # fields of the mirror missing
    ],
)
def test_anything_else_on_the_queue_is_refused(body):
    with pytest.raises(ValueError):
        decode(body)


def test_configured_as_its_readme_says_for_ordered_delivery():
    config = jaiminho_replication.JAIMINHO_CONFIG
    assert config["PUBLISH_STRATEGY"] == "keep-order"
    assert config["DELETE_AFTER_SEND"] is True
    assert config["SIGN_EVENTS"] and config["VERIFY_EVENTS_SIGNATURE"]
    # The lab module keeps its own copy of the relay command (it must not import pika).
    assert jaiminho.RELAY == jaiminho_replication.RELAY_COMMAND
    assert jaiminho.RELAY[:2] == ["events_relay", "--run-in-loop"]
    params = jaiminho_replication.connection_parameters("amqp://a:b@h1:5672/,amqp://a:b@h2/")
    assert [p.host for p in params] == ["h1", "h2"]
    assert all(p.heartbeat and p.blocked_connection_timeout for p in params)


def test_bench_and_chaos_run_its_processes(tmp_path):
    env = {"CQRS_QUEUE": "q1"}
    pipeline = jaiminho.Bench()
    assert pipeline.queue(env) == queue_name("q1") == "q1.jaiminho"
    assert "q1.jaiminho" in pipeline.queues(env) and "q1" in pipeline.queues(env)
    relay = pipeline.relay({}, tmp_path / "log")
    assert relay.argv[2:] == jaiminho.RELAY
    assert relay.env["DJANGO_SETTINGS_MODULE"] == jaiminho.SETTINGS
    writer = pipeline.writer_process({}, ["writer"], tmp_path / "log")
    assert writer.env["DJANGO_SETTINGS_MODULE"] == jaiminho.SETTINGS
    # The fault suite: its consumer is one process with no dead-letter policy of the project's.
    kinds, skipped = plan(ChaosOptions(), jaiminho.Chaos.roles, jaiminho.Chaos.skips)
    for kind in ("broker-restart", "kill-relay", "kill-consumer", "blackhole", "pause-relay"):
        assert kind in kinds
    for kind in ("poison", "crash-loop", "queue-deleted", "kill-celery", "redis-down"):
        assert kind in skipped
    assert jaiminho.Chaos.must_not_lose is False


# --- end to end -----------------------------------------------------------------------------


SCRIPT = """
from produto.models import Produto
made = [Produto.objects.create(sku=f"J-{i}", nome=f"P {i}", preco="1.50") for i in range(5)]
made[0].nome = "renamed"
made[0].save()
made[1].delete()
"""


@pytest.mark.e2e
@pytest.mark.any_database  # the outbox is jaiminho's table; either database behaves the same
def test_changes_wait_in_jaiminhos_table_until_events_relay_sends_them(tmp_path, rabbitmq_url):
    databases = Databases(tmp_path)
    log = tmp_path / "jaiminho.log"
    feed_env, feed_url = service_environment("feed", tmp_path, rabbitmq_url, databases)
    produtos_env, produtos_url = service_environment(
        "produtos", tmp_path, rabbitmq_url, databases, CQRS_EXCHANGE=feed_env["CQRS_EXCHANGE"]
    )
    pipeline = jaiminho.Bench()
    master, replica = ServiceDatabase(produtos_url), ServiceDatabase(feed_url)
    started = []
    try:
        pipeline.prepare(produtos_env, feed_env, log)
        started.append(pipeline.consumer(feed_env, log).start())
        try:
            _wait_for_consumer(rabbitmq_url, pipeline.queue(feed_env), log, timeout=20)
        except BenchError:
            pytest.fail(Path(log).read_text()[-2000:])
        subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", SCRIPT], cwd=PRODUTOS_DIR,
            env={**produtos_env, "DJANGO_SETTINGS_MODULE": jaiminho.SETTINGS}, check=True,
            capture_output=True, timeout=60,
        )  # fmt: skip
        # 5 creates, an update, a delete: 7 calls stored with the changes; none in the outbox
        # of this project (its handlers are off), nothing sent yet.
        assert master.scalar("SELECT COUNT(*) FROM jaiminho_event") == 7
        assert master.scalar("SELECT COUNT(*) FROM cqrs_outbox_outboxevent") == 0
        assert replica.scalar("SELECT COUNT(*) FROM feed_produtomirror") == 0

        started.append(pipeline.relay(produtos_env, log).start())
        columns = "id, cqrs_revision, sku, nome, preco, estoque, ativo"

        def same() -> bool:
            rows = f"SELECT {columns} FROM %s ORDER BY id"
            theirs = replica.fetchall(rows % "feed_produtomirror")
            return len(theirs) == 4 and master.fetchall(rows % "produto_produto") == theirs

        wait_until(same, timeout=20, what=f"the replica to follow; {log}")
        renamed = replica.fetchall("SELECT nome, cqrs_revision FROM feed_produtomirror "
                                   "WHERE sku = 'J-0'")  # fmt: skip
        assert renamed == [("renamed", 1)]
        # DELETE_AFTER_SEND: sent calls leave jaiminho's table.
        wait_until(lambda: master.scalar("SELECT COUNT(*) FROM jaiminho_event") == 0, timeout=5)
    finally:
        for process in started:
            process.stop()
        delete_broker_objects(rabbitmq_url, feed_env["CQRS_EXCHANGE"], pipeline.queues(feed_env))
        databases.drop_all()
