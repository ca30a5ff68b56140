"""`manage.py cqrs_queues migrate`, the real command, killed with `kill -9` where it hurt most and
run again: nothing lost, with retries waiting in a tier that expire while it lies killed.

Killed right after the replica's queue was deleted, every retry expiring before the re-run was
dead-lettered to a queue that did not exist (2,000 retries → 0) and the re-run said "0 messages
moved"; killed while moving back, the re-run had to find its way from there. Every other step is
interrupted in django_tools/tests/test_queue_types.py, in-process."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid

import pika
import pytest
from e2e_lab import wait_until

from apis_lab.catalogue import FEED
from django_tools.replica.policy import RetryPolicy
from django_tools.replica.queue_migration import queue_state
from django_tools.replica.topology import Topology

pytestmark = [pytest.mark.e2e, pytest.mark.any_database]  # broker behaviour: SQLite pass only

#: One retry tier of 1 s: retries waiting there expire while the command lies killed.
POLICY = RetryPolicy(base=1, factor=2, cap=1, max_retries=1, jitter=0)
RETRIES = 300


@pytest.fixture
def replica(rabbitmq_url, tmp_path):
    queue, exchange = f"test_mig_{uuid.uuid4().hex[:8]}", f"test_mig_x_{uuid.uuid4().hex[:8]}"
    empty = tmp_path / "empty.env"
    empty.write_text("")
    env = {
        **FEED.env(),
        "FEED_ENV_FILE": str(empty),
        "RABBITMQ_URL": rabbitmq_url,
        "CQRS_QUEUE": queue,
        "CQRS_EXCHANGE": exchange,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'feed.sqlite3'}",
        "CQRS_RETRY_BASE": str(POLICY.base),
        "CQRS_RETRY_FACTOR": str(POLICY.factor),
        "CQRS_RETRY_CAP": str(POLICY.cap),
        "CQRS_MAX_RETRIES": str(POLICY.max_retries),
        "CQRS_RETRY_JITTER": str(POLICY.jitter),
    }
    topology = Topology.named(queue, POLICY, exchange=exchange, cqrs_ids=("produto",))
    yield env, topology
    with pika.BlockingConnection(pika.URLParameters(rabbitmq_url)) as connection:
        channel = connection.channel()
        queues = topology.queues()
        markers = [topology.migration_marker(kind) for kind in ("classic", "quorum")]
        for name in [*queues, *map(Topology.migrating, queues), *markers]:
            channel.queue_delete(name)
        channel.exchange_delete(exchange)


def manage(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        FEED.manage(*args), cwd=FEED.directory, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def killed_after(env, to_type: str, queue: str, line_has: str) -> list[str]:
    """Run the migration, `kill -9` it right after its first progress line about `queue` (the
    replica's own) containing `line_has`; the lines it printed."""
    process = subprocess.Popen(
        FEED.manage("cqrs_queues", "migrate", "--to", to_type), cwd=FEED.directory, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    lines = []
    try:
        for line in process.stdout:
            lines.append(line.rstrip())
            if line.startswith(f"{queue}: ") and line_has in line:
                os.killpg(process.pid, signal.SIGKILL)
                break
    finally:
        process.wait(timeout=30)
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL, lines  # killed there, not finished
    return lines


def waiting_retries(connection, topology: Topology) -> int:
    tier = topology.retry_queue(POLICY.cap)
    return sum((queue_state(connection, name) or (0, 0))[0] for name in (tier, tier + ".migrating"))


@pytest.mark.parametrize(
    ("from_type", "to_type", "kill_after"),
    [
        ("classic", "quorum", "deleted"),  # the replica's queue deleted, not yet declared again
        ("quorum", "classic", "declared as classic"),  # moving back
    ],
)
def test_killed_and_run_again_it_loses_nothing(
    replica, rabbitmq_url, from_type, to_type, kill_after
):
    env, topology = replica
    declared = manage({**env, "CQRS_QUEUE_TYPE": from_type}, "cqrs_declare")
    assert declared.returncode == 0, declared.stdout + declared.stderr
    expected = set()
    persistent = pika.BasicProperties(delivery_mode=2)
    with pika.BlockingConnection(pika.URLParameters(rabbitmq_url)) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        for n in range(5):
            body = f"event {n}".encode()
            channel.basic_publish(topology.exchange, "produto", body, persistent, True)
            expected.add(body)
        for n in range(RETRIES):
            body = f"retry {n}".encode()
            channel.basic_publish(
                "", topology.retry_queue(POLICY.cap), body, mandatory=True,
                properties=pika.BasicProperties(delivery_mode=2, expiration="1000"),
            )  # fmt: skip
            expected.add(body)

    lines = killed_after(env, to_type, topology.queue, kill_after)
    with pika.BlockingConnection(pika.URLParameters(rabbitmq_url)) as connection:
        # Every retry expires while the command lies killed.
        wait_until(lambda: waiting_retries(connection, topology) == 0, timeout=10)
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(topology.exchange, "produto", b"while killed", persistent, True)
        expected.add(b"while killed")

    rerun = manage(env, "cqrs_queues", "migrate", "--to", to_type)
    assert rerun.returncode == 0, [*lines, rerun.stdout, rerun.stderr]
    assert f"marker {topology.migration_marker(to_type)} found" in rerun.stdout
    assert (
        rerun.stdout.strip()
        .splitlines()[-1]
        .startswith(f"every queue of {topology.queue} is {to_type} now")
    )
    shown = manage(env, "cqrs_queues", "show")
    assert f"{topology.queue}: {to_type}, " in shown.stdout, shown.stdout + shown.stderr
    assert "not finished" not in shown.stdout and "held" not in shown.stdout

    with pika.BlockingConnection(pika.URLParameters(rabbitmq_url)) as connection:
        channel = connection.channel()
        arrived = set()
        while (message := channel.basic_get(topology.queue, auto_ack=True))[0] is not None:
            arrived.add(message[2])
    lost = expected - arrived
    assert not lost, f"{len(lost)} lost, e.g. {sorted(lost)[:5]}; killed after {lines}"
