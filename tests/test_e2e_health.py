"""The health commands of the processes without HTTP, against the real processes: the relay's
`outbox_relay_health` and the consumer's `cqrs_consume_health` say healthy while they work, and
unhealthy, in one line, when they are killed, frozen, cut from the broker or stuck."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager, suppress
from pathlib import Path

import pika
import pytest
from e2e_lab import (
    FEED_DIR,
    PRODUTOS_DIR,
    Databases,
    ManageProcess,
    ServiceDatabase,
    create_products,
    delete_broker_objects,
    feed_consumer,
    feed_environment,
    outbox_relay,
    replica_queues,
    service_environment,
    wait_until,
)
from tcp_proxy import TcpProxy

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.any_database,
]  # the database plays no part here: CI runs it in its SQLite pass only


def health(directory: Path, env: dict[str, str], command: str, *args: str):
    """Run a health command as an orchestrator would: (exit code, its one line)."""
    result = subprocess.run(
        [sys.executable, "manage.py", command, *args],
        cwd=directory, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    output = (result.stdout + result.stderr).strip()
    return result.returncode, output


def relay_health(env, *args):
    return health(PRODUTOS_DIR, env, "outbox_relay_health", *args)


def consumer_health(env, *args):
    return health(FEED_DIR, env, "cqrs_consume_health", *args)


def healthy(check, env, *args):
    code, line = check(env, *args)
    return line if code == 0 else None


def unhealthy(check, env, *args):
    code, line = check(env, *args)
    assert code in (0, 1), line
    return line if code == 1 else None


@contextmanager
def frozen(process: ManageProcess):
    """SIGSTOP the process and its workers: alive, but making no progress."""
    os.killpg(process.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with suppress(ProcessLookupError):  # killed meanwhile
            os.killpg(process.process.pid, signal.SIGCONT)


@pytest.fixture
def databases(tmp_path):
    databases = Databases(tmp_path)
    yield databases
    databases.drop_all()


def test_relay_health_follows_the_relay(tmp_path, rabbitmq_url, databases):
    env, db_url = service_environment(
        "produtos", tmp_path, rabbitmq_url, databases, HEARTBEAT_DIR=str(tmp_path / "beats")
    )
    outbox = ServiceDatabase(db_url)
    processes: list[ManageProcess] = []

    def published() -> int:
        return outbox.scalar(
            "SELECT COUNT(*) FROM cqrs_outbox_outboxevent WHERE published_at IS NOT NULL"
        )

    try:
        code, line = relay_health(env)
        assert code == 1 and line.startswith("outbox relay unhealthy: no heartbeat at"), line
        assert len(line.splitlines()) == 1

        leader = outbox_relay(env, tmp_path / "leader.log")
        processes.append(leader)
        line = wait_until(lambda: healthy(relay_health, env), 60, 0.5, "the relay healthy")
        assert line.startswith("outbox relay ok: publishing"), line
        create_products(env, 50)
        wait_until(lambda: published() == 50, 60, what="the products published")
        line = wait_until(lambda: healthy(relay_health, env), 30, 0.5, "healthy after work")
        assert "backlog 0" in line and "last confirm" in line, line

        # Frozen (alive, holding the lock, beating no more): stale.
        with frozen(leader):
            line = wait_until(
                lambda: unhealthy(relay_health, env, "--stale-after", "1"), 30, 0.5, "stale"
            )
            assert f"the relay (pid {leader.process.pid}) has not beaten for" in line, line

            # A standby beats while the frozen leader holds the lock: the relay is there, but
            # nothing publishes, and rows wait longer than --max-age: stuck.
            standby = outbox_relay(env, tmp_path / "standby.log")
            processes.append(standby)
            wait_until(lambda: healthy(relay_health, env), 60, 0.5, "the standby's heartbeat")
            assert "ok: standby" in healthy(relay_health, env)
            create_products(env, 10, start=50)
            line = wait_until(
                lambda: unhealthy(relay_health, env, "--max-age", "2"), 30, 0.5, "stuck outbox"
            )
            assert "the outbox is stuck: 10 rows unpublished" in line, line

            leader.kill9()
        # The standby takes over and publishes what waited.
        wait_until(lambda: published() == 60, 60, what="the standby to publish")
        line = wait_until(
            lambda: healthy(relay_health, env, "--max-age", "2"), 30, 0.5, "healthy again"
        )
        assert line.startswith("outbox relay ok: publishing"), line

        standby.kill9()
        code, line = relay_health(env)
        assert code == 1, line
        assert f"the relay (pid {standby.process.pid}) is gone" in line, line
    finally:
        for process in processes:
            process.stop()
        delete_broker_objects(rabbitmq_url, env["CQRS_EXCHANGE"], [])


def test_relay_health_in_celery_mode(tmp_path, rabbitmq_url, databases):
    """REPLICATION_MODE=celery: the Celery relay beats the same way."""
    prefix = f"e2e_{tmp_path.name[-8:]}_"
    env, db_url = service_environment(
        "produtos", tmp_path, rabbitmq_url, databases, HEARTBEAT_DIR=str(tmp_path / "beats"),
        REPLICATION_MODE="celery", CELERY_QUEUE_PREFIX=prefix,
    )  # fmt: skip
    outbox = ServiceDatabase(db_url)
    relay = outbox_relay(env, tmp_path / "relay.log")
    try:
        wait_until(lambda: healthy(relay_health, env), 60, 0.5, "the relay healthy")
        create_products(env, 20)
        wait_until(
            lambda: outbox.scalar(
                "SELECT COUNT(*) FROM cqrs_outbox_outboxevent WHERE published_at IS NOT NULL"
            ) == 20,
            60, what="the products sent as tasks",
        )  # fmt: skip
        line = wait_until(
            lambda: (line := healthy(relay_health, env)) and "last confirm" in line and line,
            30, 0.5, "a confirm in the heartbeat",
        )  # fmt: skip
        assert line.startswith("outbox relay ok: publishing") and "backlog 0" in line, line
        relay.kill9()
        code, line = relay_health(env)
        assert code == 1 and "is gone" in line, line
    finally:
        relay.stop()
        delete_broker_objects(rabbitmq_url, env["CQRS_EXCHANGE"], [f"{prefix}feed.tasks"])


def test_relay_health_says_the_relay_cannot_reach_the_broker(tmp_path, rabbitmq_url, databases):
    params = pika.URLParameters(rabbitmq_url)
    proxy = TcpProxy(params.host, params.port).start()
    env, _ = service_environment(
        "produtos", tmp_path, rabbitmq_url, databases, HEARTBEAT_DIR=str(tmp_path / "beats")
    )
    env["RABBITMQ_URL"] = proxy.url(rabbitmq_url)
    relay = outbox_relay(env, tmp_path / "relay.log")
    try:
        wait_until(lambda: healthy(relay_health, env), 60, 0.5, "the relay healthy")
        proxy.cut()
        line = wait_until(lambda: unhealthy(relay_health, env), 30, 0.5, "the relay unhealthy")
        assert "cannot reach the broker" in line, line
        proxy.restore()
        wait_until(lambda: healthy(relay_health, env), 60, 0.5, "the relay healthy again")
    finally:
        relay.stop()
        proxy.cut()
        delete_broker_objects(rabbitmq_url, env["CQRS_EXCHANGE"], [])


def test_consumer_health_follows_its_workers(tmp_path, rabbitmq_url, databases):
    params = pika.URLParameters(rabbitmq_url)
    proxy = TcpProxy(params.host, params.port).start()
    env, _ = feed_environment(
        tmp_path, rabbitmq_url, databases, HEARTBEAT_DIR=str(tmp_path / "beats")
    )
    env["RABBITMQ_URL"] = proxy.url(rabbitmq_url)
    consumer = None
    try:
        code, line = consumer_health(env)
        assert code == 1 and line.startswith("consumer unhealthy: no consumer heartbeat"), line

        consumer = feed_consumer(env, tmp_path / "consumer.log", workers=2)
        line = wait_until(
            lambda: (line := healthy(consumer_health, env)) and "2 of 2" in line and line,
            60, 0.5, "both workers consuming",
        )  # fmt: skip
        assert line.startswith("consumer ok: 2 of 2 workers consuming"), line

        # Cut from the broker: the workers reconnect, and say so.
        proxy.cut()
        line = wait_until(lambda: unhealthy(consumer_health, env), 30, 0.5, "reconnecting")
        assert "no worker is consuming" in line and "reconnecting" in line, line
        proxy.restore()
        wait_until(lambda: healthy(consumer_health, env), 60, 0.5, "consuming again")

        with frozen(consumer):
            line = wait_until(
                lambda: unhealthy(consumer_health, env, "--stale-after", "1"), 30, 0.5, "stale"
            )
            assert "silent for" in line, line

        consumer.kill9()
        code, line = consumer_health(env)
        assert code == 1 and "is gone" in line, line
        assert len(line.splitlines()) == 1
    finally:
        if consumer is not None:
            consumer.stop()
        proxy.cut()
        delete_broker_objects(rabbitmq_url, env["CQRS_EXCHANGE"], replica_queues(env["CQRS_QUEUE"]))
