"""Queue types against the real broker: quorum for a new replica, an existing deployment kept as
it is, a configured type that contradicts the broker refused with the way out, and the move of a
whole replica from classic to quorum (and back) without losing a message."""

import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pika
import pytest

from django_tools.connectivity import amqp_channel
from django_tools.replica import dead_letters
from django_tools.replica.checks import check_queue_type
from django_tools.replica.consumer import Consumer
from django_tools.replica.policy import RetryPolicy
from django_tools.replica.queue_migration import MigrationRefused, migrate, queue_state
from django_tools.replica.topology import (
    CLASSIC,
    QUORUM,
    MigrationInProgress,
    QueueTypeMismatch,
    Topology,
)
from django_tools.testing import wait_until

# No database in it (queue types and migrations on the broker): CI runs it on SQLite only.
pytestmark = pytest.mark.any_database

POLICY = RetryPolicy(base=1, factor=2, cap=4, max_retries=3, jitter=0)


@pytest.fixture
def names(rabbitmq_url):
    queue, exchange = f"test_qt_{uuid.uuid4().hex[:8]}", f"test_qt_x_{uuid.uuid4().hex[:8]}"
    yield queue, exchange
    topology = Topology.named(queue, POLICY, exchange=exchange)
    with amqp_channel(rabbitmq_url) as channel:
        names = [*topology.queues(), *(f"{q}.migrating" for q in topology.queues())]
        for name in [*names, *map(topology.migration_marker, ("classic", "quorum"))]:
            channel.queue_delete(name)
        channel.exchange_delete(exchange)


def topology(names, queue_type=None) -> Topology:
    queue, exchange = names
    return Topology.named(
        queue, POLICY, exchange=exchange, cqrs_ids=("item",), queue_type=queue_type
    )


def types(channel, t: Topology) -> set[str]:
    return {t.existing_type(channel, queue) for queue in t.queues()}


def test_a_new_replica_gets_quorum_queues_and_an_existing_one_keeps_its_type(rabbitmq_url, names):
    with amqp_channel(rabbitmq_url) as channel:
        lines = topology(names).declare(channel)
        assert types(channel, topology(names)) == {QUORUM}
        assert any("(quorum, retries wait 1s" in line for line in lines)
    other = (names[0] + "_c", names[1])
    try:
        with amqp_channel(rabbitmq_url) as channel:
            topology(other, CLASSIC).declare(channel)
            topology(other).declare(channel)  # unset: what the broker has
            assert types(channel, topology(other)) == {CLASSIC}
    finally:
        with amqp_channel(rabbitmq_url) as channel:
            for queue in topology(other).queues():
                channel.queue_delete(queue)


def test_a_type_that_contradicts_the_broker_is_refused_with_the_way_out(rabbitmq_url, names):
    with amqp_channel(rabbitmq_url) as channel:
        topology(names, CLASSIC).declare(channel)
        with pytest.raises(QueueTypeMismatch) as refused:
            topology(names, QUORUM).declare(channel)
    message = str(refused.value)
    assert f"queue {names[0]} exists as a classic queue, but CQRS_QUEUE_TYPE=quorum" in message
    assert "cqrs_queues migrate --to quorum" in message


def test_moving_a_replica_to_quorum_and_back_loses_nothing(rabbitmq_url, names):
    classic = topology(names, CLASSIC)
    with amqp_channel(rabbitmq_url) as channel:
        channel.confirm_delivery()
        classic.declare(channel)
        persistent = pika.BasicProperties(delivery_mode=2)
        for n in range(5):
            channel.basic_publish(names[1], "item", f"event {n}".encode(), persistent, True)
        for n in range(2):
            channel.basic_publish(
                "", classic.dead_letter_queue, f"dead {n}".encode(), persistent, True
            )
        channel.basic_publish(
            "", classic.retry_queue(4), b"retry", mandatory=True,
            properties=pika.BasicProperties(delivery_mode=2, expiration="60000"),
        )  # fmt: skip

    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        said = []
        assert migrate(connection, classic, QUORUM, say=said.append) == 8
        channel = connection.channel()
        assert types(channel, topology(names)) == {QUORUM}
        depths = {
            q: channel.queue_declare(q, passive=True).method.message_count
            for q in topology(names).queues()
        }
        assert depths[names[0]] == 5 and depths[classic.dead_letter_queue] == 2
        assert depths[classic.retry_queue(4)] == 1
        # Bound again: a new event lands in the quorum queue.
        channel.confirm_delivery()
        channel.basic_publish(names[1], "item", b"after", pika.BasicProperties(delivery_mode=2),
                              mandatory=True)  # fmt: skip
        wait_until(lambda: channel.queue_declare(names[0], passive=True).method.message_count == 6)
        bodies = []
        while (message := channel.basic_get(names[0], auto_ack=True))[0] is not None:
            bodies.append(message[2])
        assert bodies == [f"event {n}".encode() for n in range(5)] + [b"after"]

        # And back to classic, with a consumer attached first: refused, nothing touched.
        consumer = connection.channel()
        consumer.basic_consume(names[0], lambda *_: None)
        with pytest.raises(MigrationRefused, match="stop the replica's consumers"):
            migrate(connection, topology(names), CLASSIC)
        consumer.close()
        assert migrate(connection, topology(names), CLASSIC) == 3
        assert types(connection.channel(), topology(names)) == {CLASSIC}
    finally:
        connection.close()


# --- a migration interrupted anywhere, run again ---------------------------------------------

#: Retry tiers of 0.2 s and 0.4 s: retries waiting there when a migration is interrupted
#: expire while it is (the replica's queue perhaps deleted), long before it is run again.
SHORT_TIERS = RetryPolicy(base=0.2, factor=2, cap=0.4, max_retries=2, jitter=0)


class Killed(Exception):
    """Stands for `kill -9`: raised inside the migration, it leaves everything as it is; the
    connection is then closed, and the broker gives back what was read and not acknowledged."""


def short_topology(names, queue_type=None) -> Topology:
    queue, exchange = names
    return Topology.named(
        queue, SHORT_TIERS, exchange=exchange, cqrs_ids=("item",), queue_type=queue_type
    )


def every_name(t: Topology) -> list[str]:
    queues = t.queues()
    return [*queues, *map(Topology.migrating, queues), *map(t.migration_marker, (CLASSIC, QUORUM))]


def drop(url: str, t: Topology) -> None:
    with amqp_channel(url) as channel:
        for name in every_name(t):
            channel.queue_delete(name)
        channel.exchange_delete(t.exchange)


def exists(connection, queue: str) -> bool:
    return queue_state(connection, queue) is not None


def drain(connection, queue: str) -> list[bytes]:
    channel = connection.channel()
    bodies = []
    while (message := channel.basic_get(queue, auto_ack=True))[0] is not None:
        bodies.append(message[2])
    channel.close()
    return bodies


def stock(connection, t: Topology) -> tuple[set[bytes], set[bytes]]:
    """Events in the replica's queue, retries in each tier (expiring within 0.4 s), dead letters:
    (what must end in the replica's queue, what must end in the dead-letter queue)."""
    channel = connection.channel()
    channel.confirm_delivery()
    persistent = pika.BasicProperties(delivery_mode=2)
    events, dead = set(), set()
    for n in range(2):
        events.add(f"event {n}".encode())
        channel.basic_publish(t.exchange, "item", f"event {n}".encode(), persistent, True)
    for tier in t.policy.tiers():
        for n in range(1):
            body = f"retry {tier} {n}".encode()
            events.add(body)
            channel.basic_publish(
                "", t.retry_queue(tier), body, mandatory=True,
                properties=pika.BasicProperties(delivery_mode=2, expiration=str(int(tier * 1000))),
            )  # fmt: skip
    for n in range(1):
        dead.add(f"dead {n}".encode())
        channel.basic_publish("", t.dead_letter_queue, f"dead {n}".encode(), persistent, True)
    channel.close()
    return events, dead


def publish_event(connection, t: Topology, body: bytes) -> None:
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_publish(t.exchange, "item", body, pika.BasicProperties(delivery_mode=2), True)
    channel.close()


def retries_waiting(connection, t: Topology) -> int:
    tiers = [t.retry_queue(tier) for tier in t.policy.tiers()]
    return sum(
        (queue_state(connection, name) or (0, 0))[0]
        for name in [*tiers, *map(Topology.migrating, tiers)]
    )


def interrupted_then_run_again(url: str, names, from_type: str, to_type: str, at: int) -> bool:
    """Stock the queues, migrate, interrupt the migration at its `at`-th checkpoint, let every
    retry expire and an event arrive, run it again; check that nothing was lost. False when the
    migration finished before its `at`-th checkpoint."""
    old = short_topology(names, from_type)
    with amqp_channel(url) as channel:
        old.declare(channel)
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        events, dead = stock(connection, old)
        seen = []

        def checkpoint(where: str) -> None:
            seen.append(where)
            if len(seen) == at:
                raise Killed(where)

        try:
            migrate(connection, short_topology(names), to_type, checkpoint=checkpoint)
        except Killed:
            killed = True
        else:
            killed = False
    finally:
        connection.close()  # the kill: what was read and not acknowledged goes back
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        where = f"interrupted at checkpoint {at} ({seen[-1] if seen else 'start'})"
        # Every retry expires (into the replica's queue, or its holding queue while the
        # replica's queue is deleted) before the migration is run again.
        wait_until(lambda: retries_waiting(connection, old) == 0, timeout=5, what=where)
        publish_event(connection, old, b"while interrupted")
        migrate(connection, short_topology(names), to_type)
        new = short_topology(names, to_type)
        for queue in new.queues():
            assert new.existing_type(connection.channel(), queue) == to_type, where
            assert not exists(connection, Topology.migrating(queue)), where
        assert new.migration_in_progress(connection) is None, where
        publish_event(connection, new, b"after")  # bound again
        wait_until(lambda: retries_waiting(connection, new) == 0, timeout=5, what=where)
        arrived = set(drain(connection, new.queue))
        lost = (events | {b"while interrupted", b"after"}) - arrived
        assert not lost, f"{where}: lost {sorted(lost)}"
        lost = dead - set(drain(connection, new.dead_letter_queue))
        assert not lost, f"{where}: lost dead letters {sorted(lost)}"
    finally:
        connection.close()
        drop(url, old)
    return killed


def fresh_names() -> tuple[str, str]:
    return f"test_mk_{uuid.uuid4().hex[:8]}", f"test_mk_x_{uuid.uuid4().hex[:8]}"


def checkpoints(url: str, from_type: str, to_type: str) -> int:
    """How many checkpoints a whole migration of the stocked queues passes."""
    names = fresh_names()
    with amqp_channel(url) as channel:
        short_topology(names, from_type).declare(channel)
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        stock(connection, short_topology(names))
        seen = []
        migrate(connection, short_topology(names), to_type, checkpoint=seen.append)
    finally:
        connection.close()
        drop(url, short_topology(names))
    return len(seen)


@pytest.mark.parametrize(("from_type", "to_type"), [(CLASSIC, QUORUM), (QUORUM, CLASSIC)])
def test_a_migration_interrupted_at_any_step_and_run_again_loses_nothing(
    rabbitmq_url, from_type, to_type
):
    """At every checkpoint: after each progress line, and after each message copied and not
    yet acknowledged. Retries waiting in the tiers expire while it is interrupted; once the
    replica's queue was deleted they expired into nothing (2,000 retries → 0). Each
    interruption on queues of its own, several at once (most of the time is retries expiring)."""
    total = checkpoints(rabbitmq_url, from_type, to_type)
    assert total > 20  # the marker, each queue held and moved back, each message copied…
    with ThreadPoolExecutor(max_workers=8) as pool:
        runs = [
            pool.submit(
                interrupted_then_run_again, rabbitmq_url, fresh_names(), from_type, to_type, at
            )
            for at in range(1, total + 1)
        ]
        killed = [run.result() for run in runs]
    # Retries that expire during a run make it a checkpoint or two shorter, now and then.
    assert sum(killed) >= total - 3


def test_the_type_of_a_queue_with_arguments_of_its_own_is_read_not_guessed(rabbitmq_url, names):
    """A quorum queue with arguments the topology does not set (a delivery limit, a length
    limit) read as "classic" (any refused declare did), so `migrate --to classic` did nothing
    and said it worked. Now its type is read from the broker's answer; and it migrates."""
    t = topology(names)
    extra = {
        QUORUM: {"x-delivery-limit": 5, "x-max-length": 10_000},
        CLASSIC: {"x-max-length": 10_000},
    }
    with amqp_channel(rabbitmq_url) as channel:
        for queue in t.queues():
            channel.queue_declare(
                queue, durable=True, arguments={**t.arguments(queue, QUORUM), **extra[QUORUM]}
            )
        channel.confirm_delivery()
        persistent = pika.BasicProperties(delivery_mode=2)
        for n in range(3):
            channel.basic_publish("", names[0], f"event {n}".encode(), persistent, True)
        assert types(channel, t) == {QUORUM}
        # Classic queues too, with and without arguments of their own, and without x-queue-type.
        for suffix, arguments in (("_c1", extra[CLASSIC]), ("_c2", {}), ("_c3", None)):
            channel.queue_declare(names[0] + suffix, durable=True, arguments=arguments)
        try:
            for suffix in ("_c1", "_c2", "_c3"):
                assert t.existing_type(channel, names[0] + suffix) == CLASSIC
        finally:
            for suffix in ("_c1", "_c2", "_c3"):
                channel.queue_delete(names[0] + suffix)

    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        assert migrate(connection, t, CLASSIC) == 3
        assert types(connection.channel(), t) == {CLASSIC}
        assert queue_state(connection, names[0]) == (3, 0)
    finally:
        connection.close()


def kill_at(line_start: str):
    """A checkpoint that interrupts the migration after its progress line starting so."""

    def checkpoint(where: str) -> None:
        if where.startswith(line_start):
            raise Killed(where)

    return checkpoint


def test_a_consumer_started_mid_migration_waits_and_strands_nothing(rabbitmq_url, names, caplog):
    """Interrupted while moving back, then a consumer started by its supervisor with the old
    settings: it declared the queue with the old type and consumed it, the messages moved
    stayed in `<queue>.migrating` (which kept collecting every event) and the migration refused
    to go on ("queue has 1 consumers"). Now the consumer waits, in one log line, while the
    marker exists; the migration runs again to the end; nothing is left behind."""
    old = topology(names, CLASSIC)
    with amqp_channel(rabbitmq_url) as channel:
        old.declare(channel)
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        for n in range(4):
            publish_event(connection, old, f"event {n}".encode())
        with pytest.raises(Killed):
            migrate(connection, topology(names), QUORUM,
                    checkpoint=kill_at(f"{names[0]}: declared as quorum"))  # fmt: skip
    finally:
        connection.close()
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    stop = threading.Event()
    consumer = Consumer(old, rabbitmq_url, stop=stop)  # CQRS_QUEUE_TYPE=classic, as before
    failed: list[BaseException] = []

    def run() -> None:
        try:
            consumer.run()
        except BaseException as exc:  # after the migration: the old type is refused
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    try:
        with caplog.at_level(logging.WARNING, logger="django_tools.replica"):
            thread.start()
            wait_until(
                lambda: f"queue {names[0]} is being migrated to quorum" in caplog.text,
                what="the consumer's line saying it waits for the migration",
            )
        holding = Topology.migrating(names[0])
        assert queue_state(connection, holding) == (4, 0)
        assert queue_state(connection, names[0]) == (0, 0)  # declared as quorum, not consumed

        publish_event(connection, old, b"meanwhile")
        assert migrate(connection, topology(names), QUORUM) == 5  # not refused
        assert not exists(connection, holding)
        expected = {f"event {n}".encode() for n in range(4)} | {b"meanwhile"}
        assert set(drain(connection, names[0])) == expected  # "meanwhile" perhaps twice
        assert types(connection.channel(), topology(names)) == {QUORUM}
    finally:
        stop.set()
        thread.join(timeout=10)
        connection.close()
    assert not thread.is_alive()
    # Once the marker is gone, a consumer still set to the old type is refused (not consuming).
    assert all(isinstance(exc, QueueTypeMismatch) for exc in failed)


def test_nothing_declares_the_queues_while_a_migration_is_unfinished(rabbitmq_url, names, settings):
    """The dead-letter page, `cqrs_declare` and a consumer start declare the replica's queues:
    mid-migration that re-declared the replica's queue with the old type. With the marker they
    refuse in one line, and `cqrs_consume` starts its workers to wait (a warning, not E006)."""
    t = topology(names, CLASSIC)
    with amqp_channel(rabbitmq_url) as channel:
        t.declare(channel)
        channel.queue_declare(t.migration_marker(QUORUM), durable=True)
        with pytest.raises(MigrationInProgress) as refused:
            t.declare(channel)
    line = str(refused.value)
    assert f"queue {names[0]} is being migrated to quorum" in line
    assert "cqrs_queues migrate --to quorum" in line and "\n" not in line

    # The dead-letter page and `cqrs_dead_letters`: a broker problem, shown in its one line.
    with pytest.raises(dead_letters.BROKER_ERRORS) as page:
        dead_letters.browse(t, url=rabbitmq_url)
    assert isinstance(page.value, MigrationInProgress) and str(page.value) == line

    settings.CQRS = {
        **settings.CQRS,
        "url": rabbitmq_url,
        "queue": names[0],
        "exchange": names[1],
        "replica": {**settings.CQRS["replica"], "queue_type": CLASSIC},
    }
    assert [(p.id, p.is_serious()) for p in check_queue_type()] == [
        ("django_tools.replica.W003", False)
    ]
    # And a migration the other way waits for this one to be finished.
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        with pytest.raises(MigrationRefused, match=r"finish it first with `manage\.py cqrs_queues"):
            migrate(connection, t, CLASSIC)
    finally:
        connection.close()


def test_quorum_queues_of_before_the_delivery_limits_keep_working_until_migrated(
    rabbitmq_url, names
):
    """A deployment whose quorum queues were declared without delivery limits: RabbitMQ refuses
    a declare with other arguments (406), so they are used as they are, with the way out in
    the declare's lines; `migrate --to quorum` declares them again with the limits, keeping
    their messages."""
    current = topology(names, QUORUM)
    with amqp_channel(rabbitmq_url) as channel:
        channel.exchange_declare(names[1], exchange_type="topic", durable=True)
        for queue in current.queues():  # as the version before the limits declared them
            channel.queue_declare(
                queue, durable=True, arguments=current.arguments(queue, QUORUM, limited=False)
            )
        channel.queue_bind(names[0], names[1], routing_key="item")
        channel.confirm_delivery()
        persistent = pika.BasicProperties(delivery_mode=2)
        for n in range(3):
            channel.basic_publish(names[1], "item", f"event {n}".encode(), persistent, True)

    with amqp_channel(rabbitmq_url) as channel:
        lines = topology(names).declare(channel)  # type unset: what the broker has
        assert any(f"queue {names[0]} (quorum, no delivery limit" in line for line in lines)
        assert types(channel, current) == {QUORUM}
        assert not current.up_to_date(channel.connection, names[0], QUORUM)
        current.declare(channel)  # CQRS_QUEUE_TYPE=quorum: no mismatch either

    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        assert migrate(connection, current, QUORUM) == 3
        channel = connection.channel()
        assert all(current.up_to_date(connection, q, QUORUM) for q in current.queues())
        assert channel.queue_declare(names[0], passive=True).method.message_count == 3
        lines = current.declare(channel)
        assert any(f"queue {names[0]} (quorum, delivery limit 20)" in line for line in lines)
    finally:
        connection.close()
