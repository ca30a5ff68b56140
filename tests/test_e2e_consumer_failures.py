"""The real `cqrs_consume` processes, killed with SIGKILL at bad moments, against the real broker
and database: scheduled retries survive, nothing is lost, nothing is applied wrongly."""

import os
import random
import signal
import time

import pytest
from e2e_lab import (
    Databases,
    ManageProcess,
    Publisher,
    ServiceDatabase,
    delete_feed_queues,
    feed_consumer,
    feed_environment,
    produto_data,
    stock_payload,
    wait_until,
)

from apis_lab import supervision
from django_tools.heartbeat import pid_alive as alive
from django_tools.replica.policy import RetryPolicy

pytestmark = pytest.mark.e2e

RETRY = {
    "CQRS_RETRY_BASE": "2",
    "CQRS_RETRY_FACTOR": "2",
    "CQRS_RETRY_CAP": "8",
    "CQRS_MAX_RETRIES": "4",
    "CQRS_RETRY_JITTER": "0",
    # A locked table fails a write within a fraction of a second instead of waiting.
    "SQLITE_BUSY_TIMEOUT": "0.2",
    "DB_STATEMENT_TIMEOUT": "300",
}
POLICY = RetryPolicy(base=2, factor=2, cap=8, max_retries=4, jitter=0)


@pytest.fixture
def feed(tmp_path, rabbitmq_url):
    databases = Databases(tmp_path)
    env, db_url = feed_environment(tmp_path, rabbitmq_url, databases, **RETRY)
    publisher = Publisher(rabbitmq_url, env["CQRS_EXCHANGE"])
    consumers: list[ManageProcess] = []

    def consumer(workers: int = 1) -> ManageProcess:
        started = feed_consumer(env, tmp_path / "consumer.log", workers)
        consumers.append(started)
        return started

    yield env, ServiceDatabase(db_url), publisher, consumer, tmp_path / "consumer.log"
    for running in consumers:
        running.stop()
    publisher.close()
    delete_feed_queues(rabbitmq_url, env, POLICY)
    databases.drop_all()


def test_retries_scheduled_before_a_sigkill_are_delivered_after_restart_and_not_early(feed):
    env, db, publisher, consumer, log = feed
    queue, first_tier = env["CQRS_QUEUE"], f"{env['CQRS_QUEUE']}.retry.2s"
    running = consumer()
    with db.locked():
        for pk in range(1, 6):
            publisher.publish(stock_payload("SAVE", produto_data(pk, 0)))
        wait_until(lambda: publisher.depth(first_tier) == 5, 30, what="five retries scheduled")
        scheduled_at = time.monotonic()
        running.kill9()
    assert db.rows() == {}

    consumer()
    first_seen = None
    deadline = time.monotonic() + 30
    while len(db.rows()) < 5 and time.monotonic() < deadline:
        if first_seen is None and db.rows():
            first_seen = time.monotonic()
        time.sleep(0.02)
    first_seen = first_seen or time.monotonic()
    rows = db.rows()
    assert sorted(rows) == [1, 2, 3, 4, 5], log.read_text()[-3000:]
    waited = first_seen - scheduled_at
    assert waited >= 2.0 - 0.1, f"a retry came back after {waited:.2f}s, before its 2s delay"
    assert publisher.depth(queue) == 0
    assert publisher.depth(f"dead_letter_{queue}") == 0
    print(f"\nretries scheduled before the SIGKILL applied {waited:.2f}s after scheduling")


def history(pk: int, rng: random.Random) -> list[dict]:
    """A product's events as its master publishes them: saves, then maybe a delete."""
    saves = rng.randint(1, 4)
    events = [stock_payload("SAVE", produto_data(pk, rev)) for rev in range(saves)]
    if rng.random() < 0.3:
        events.append(
            stock_payload("DELETE", {"id": pk, "cqrs_revision": saves, "cqrs_updated": "2026"})
        )
    return events


def test_consumers_killed_again_and_again_still_converge(feed):
    """Two consumer processes (one with two workers) take a stream of events while one of
    them is killed with SIGKILL three times; the replica ends equal to the master."""
    env, db, publisher, consumer, _ = feed
    rng = random.Random(20261127)
    histories = {pk: history(pk, rng) for pk in range(1, 301)}
    stable = consumer(workers=2)
    victim = consumer(workers=1)
    # Interleave products, each product's own events in order (as one master publishes them).
    pending = {pk: list(events) for pk, events in histories.items()}
    published = 0
    kills = 0
    while pending:
        pk = rng.choice(list(pending))
        publisher.publish(pending[pk].pop(0))
        if not pending[pk]:
            del pending[pk]
        published += 1
        if published % 200 == 0 and kills < 3:
            victim.kill9()
            kills += 1
            victim = consumer(workers=1)
    assert kills == 3

    expected = {}
    for pk, events in histories.items():
        last = events[-1]
        if last["signal_type"] == "SAVE":
            data = last["instance_data"]
            expected[pk] = (data["cqrs_revision"], data["nome"], data["estoque"])

    queue = env["CQRS_QUEUE"]
    wait_until(
        lambda: db.rows() == expected and publisher.depth(queue) == 0,
        60,
        interval=0.2,
        what="the replica to converge",
    )
    assert publisher.depth(f"dead_letter_{queue}") == 0
    stable.stop()
    print(f"\n{published} events, {kills} SIGKILLs: replica equal to the master")


def children_of(pid: int) -> list[int]:
    """Live consumer workers of `cqrs_consume` process `pid` (not its multiprocessing resource
    tracker)."""
    return supervision.children_of(pid, b"spawn_main")


def test_a_consumer_worker_killed_is_replaced_and_consumption_goes_on(feed):
    """Stock `cqrs_consume` never looked at its workers again: a worker killed with SIGKILL
    left the parent alive, with nobody consuming and nothing for a supervisor to see."""
    env, db, publisher, consumer, log = feed
    running = consumer(workers=2)
    parent = running.process.pid
    workers = wait_until(lambda: len(children_of(parent)) == 2 and children_of(parent), 30)
    publisher.publish(stock_payload("SAVE", produto_data(1, 0)))
    wait_until(lambda: 1 in db.rows(), 30, what="the first save")

    victim = workers[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: len(children_of(parent)) == 2 and victim not in children_of(parent), 15,
        what="a new worker in place of the killed one",
    )  # fmt: skip
    replaced = children_of(parent)
    assert running.process.poll() is None  # the parent goes on
    for pk in range(2, 41):
        publisher.publish(stock_payload("SAVE", produto_data(pk, 0)))
    wait_until(lambda: len(db.rows()) == 40, 30, what="every save after the kill")
    assert publisher.depth(env["CQRS_QUEUE"]) == 0
    # The parent logs the death once `start_process` returns, and a spawned child shows in /proc
    # before that (start() waits for the child to read its launch data): wait for the line.
    wait_until(
        lambda: "died (exit code -9)" in log.read_text(), 15, what="the parent to log the death"
    )

    # The parent killed with SIGKILL: its workers stop on their own instead of consuming on.
    os.kill(parent, signal.SIGKILL)
    running.process.wait(timeout=10)
    wait_until(lambda: not any(alive(pid) for pid in replaced), 15, what="the orphans to stop")
