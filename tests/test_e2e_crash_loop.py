"""A message that kills the consumer worker reading it, every time (the lab's crash hook: the
worker SIGKILLs itself when it decodes the marker), against the real `cqrs_consume` and broker:
the message ends in the dead-letter queue with reason `redelivered` after CQRS_MAX_DELIVERIES
deliveries, the messages prefetched beside it are applied, the consumer stays up and new writes
keep arriving. Then the same on a RabbitMQ node of the test's own with RabbitMQ 4's default
delivery limit set as a policy (quorum queues drop a message past it unless they dead-letter):
the message is not lost, and a message given back past the broker's limit by anything else
lands in the dead-letter queue too."""

from __future__ import annotations

import json

import pika
import pytest
from e2e_lab import (
    Databases,
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
from apis_lab.chaos import crash_hook
from apis_lab.rabbit_nodes import RabbitNode
from django_tools.replica.policy import RetryPolicy

pytestmark = [pytest.mark.e2e, pytest.mark.any_database]  # broker behaviour: SQLite pass only

POLICY = RetryPolicy(base=1, factor=2, cap=2, max_retries=2, jitter=0)
RETRY = {
    "CQRS_RETRY_BASE": "1",
    "CQRS_RETRY_FACTOR": "2",
    "CQRS_RETRY_CAP": "2",
    "CQRS_MAX_RETRIES": "2",
    "CQRS_RETRY_JITTER": "0",
}
#: RabbitMQ 4.x's default for quorum queues, as a policy on the installed 3.x.
RABBITMQ_4_DEFAULTS = '{"delivery-limit":20}'


def crashing_feed(tmp_path, rabbitmq_url: str):
    """The feed's database, queues and environment, with the lab's crash hook for its consumer
    and heartbeats (and probation markers) in a folder of the test's own."""
    databases = Databases(tmp_path)
    hook = crash_hook.environment()
    env, db_url = feed_environment(
        tmp_path, rabbitmq_url, databases, HEARTBEAT_DIR=str(tmp_path / "beats"), **RETRY
    )
    return databases, {**env, **hook}, ServiceDatabase(db_url)


def dead_letters(url: str, queue: str) -> list[tuple[dict, dict]]:
    """(headers, body) of each dead letter, read and given back."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        letters = []
        while (message := channel.basic_get(f"dead_letter_{queue}"))[0] is not None:
            letters.append((message[1].headers or {}, json.loads(message[2])))
        return letters
    finally:
        connection.close()


def workers_of(pid: int) -> list[int]:
    return supervision.children_of(pid, b"spawn_main")


def crash_loop_round(env: dict, db: ServiceDatabase, url: str, log) -> list[tuple[dict, dict]]:
    """Innocent saves, the crashing one, more innocent saves; returns the dead letters once the
    consumer got through them, after checking it is alive and applies new writes."""
    publisher = Publisher(url, env["CQRS_EXCHANGE"])
    queue = env["CQRS_QUEUE"]
    try:
        for pk in range(1, 31):
            publisher.publish(stock_payload("SAVE", produto_data(pk, 0)))
        publisher.publish(
            stock_payload("SAVE", produto_data(999, 0, nome=f"{crash_hook.MARKER} e2e"))
        )
        for pk in range(31, 61):
            publisher.publish(stock_payload("SAVE", produto_data(pk, 0)))
        consumer = feed_consumer(env, log, workers=1)
        try:
            wait_until(
                lambda: publisher.depth(f"dead_letter_{queue}") == 1, 60, interval=0.1,
                what="the crashing message in the dead-letter queue",
            )  # fmt: skip
            wait_until(lambda: len(db.rows()) == 60, 30, what="every innocent message applied")
            deaths = log.read_text().count(crash_hook.KILL_LINE)
            assert deaths == 3, log.read_text()[-3000:]  # CQRS_MAX_DELIVERIES
            assert 999 not in db.rows()
            # Alive: the parent, one worker; and new writes keep arriving.
            parent = consumer.process.pid
            assert consumer.process.poll() is None
            wait_until(lambda: len(workers_of(parent)) == 1, 15, what="a worker running")
            for pk in range(61, 71):
                publisher.publish(stock_payload("SAVE", produto_data(pk, 0)))
            wait_until(lambda: len(db.rows()) == 70, 30, what="new writes after it")
            assert publisher.depth(queue) == 0
            assert log.read_text().count(crash_hook.KILL_LINE) == deaths
            assert list((log.parent / "beats" / "probation").iterdir()) == []
        finally:
            consumer.stop()
    finally:
        publisher.close()
    return dead_letters(url, queue)


def assert_set_aside(letter: tuple[dict, dict]) -> None:
    headers, body = letter
    assert headers["x-cqrs-dead-reason"] == "redelivered"
    assert headers["x-cqrs-deliveries"] == 3
    assert headers["x-cqrs-error-class"].endswith(".CrashLooping")
    assert body["instance_data"]["nome"] == f"{crash_hook.MARKER} e2e"


def test_a_message_that_kills_every_worker_goes_to_the_dlq_and_the_rest_flows(
    tmp_path, rabbitmq_url
):
    databases, env, db = crashing_feed(tmp_path, rabbitmq_url)
    try:
        letters = crash_loop_round(env, db, rabbitmq_url, tmp_path / "consumer.log")
        assert len(letters) == 1
        assert_set_aside(letters[0])
    finally:
        delete_feed_queues(rabbitmq_url, env, POLICY)
        databases.drop_all()


@pytest.fixture(scope="module")
def rabbitmq_4_semantics():
    """A node of the test's own (never the machine's) with RabbitMQ 4's default delivery limit
    of quorum queues set as a policy."""
    node = RabbitNode().start()
    try:
        # `--apply-to quorum_queues` is 3.12+; `delivery-limit` means nothing to classic queues,
        # so `queues` is the same policy on 3.10.
        applies_to = "quorum_queues"
        if node.ctl("set_policy", "probe", "^$", "{}", "--apply-to", applies_to,
                    check=False).returncode:  # fmt: skip
            applies_to = "queues"
        node.ctl("clear_policy", "probe", check=False)
        node.ctl(
            "set_policy", "rabbitmq-4-defaults", ".*", RABBITMQ_4_DEFAULTS,
            "--apply-to", applies_to,
        )  # fmt: skip
        yield node
    finally:
        node.stop()


def test_under_rabbitmq_4_delivery_limits_nothing_is_dropped(tmp_path, rabbitmq_4_semantics):
    url = rabbitmq_4_semantics.url
    databases, env, db = crashing_feed(tmp_path, url)
    queue = env["CQRS_QUEUE"]
    try:
        # The broker's own limit, with no consumer of ours: a message given back more times
        # than the limit (a client that nacks it, consumers that keep crashing before our
        # set-aside could act) is dead-lettered into the dead-letter queue, not dropped.
        connection = pika.BlockingConnection(pika.URLParameters(url))
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            "", queue, b'{"given": "back"}', pika.BasicProperties(delivery_mode=2)
        )
        returned = 0

        def give_back() -> bool:
            nonlocal returned
            method = channel.basic_get(queue)[0]
            if method is not None:
                channel.basic_nack(method.delivery_tag, requeue=True)
                returned += 1
            dead = channel.queue_declare(f"dead_letter_{queue}", passive=True).method
            return dead.message_count == 1

        wait_until(give_back, 30, what="the message past the limit in the dead-letter queue")
        assert returned == 21  # delivered 21 times: the 21st return is past the limit of 20
        assert channel.queue_declare(queue, passive=True).method.message_count == 0
        connection.close()

        # The consumer's set-aside acts long before the limit.
        letters = crash_loop_round(env, db, url, tmp_path / "consumer.log")
        assert len(letters) == 2
        backstop, set_aside = letters
        assert backstop[1] == {"given": "back"}
        assert backstop[0]["x-death"][0]["reason"] == "delivery_limit"
        assert_set_aside(set_aside)
    finally:
        delete_feed_queues(url, env, POLICY)
        databases.drop_all()
