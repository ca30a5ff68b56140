"""Reading the dead-letter queue never counts a delivery: on RabbitMQ 4 (its default delivery
limit of 20 set as a policy on a node of the test's own) the queue read 50 times still holds
every letter; two readers never interleave; an action confirmed while others read finds what
the operator saw; a reader killed halfway loses nothing; a dead-letter queue declared by an
earlier version keeps working and `cqrs_queues migrate` gives it today's arguments."""

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

from django_tools.connectivity import amqp_channel
from django_tools.replica import dead_letters
from django_tools.replica.policy import RetryPolicy
from django_tools.replica.queue_migration import migrate
from django_tools.replica.topology import DEAD_LETTER_DELIVERY_LIMIT, QUORUM, Topology
from django_tools.testing import queue_depth, wait_until

# No database in it (dead-letter queues on the broker): CI runs it on SQLite only.
pytestmark = pytest.mark.any_database

SIGNATURE = {"x-cqrs-signature": "sha256=" + "ab" * 32, "x-cqrs-dead-reason": "permanent"}


def put_letters(url: str, queue: str, count: int, *, confirm_each: bool = True) -> list[bytes]:
    bodies = [json.dumps({"cqrs_id": "book", "instance_pk": n}).encode() for n in range(count)]
    with amqp_channel(url) as channel:
        if confirm_each:
            channel.confirm_delivery()
        for body in bodies:
            channel.basic_publish(
                "", queue, body, pika.BasicProperties(delivery_mode=2, headers=SIGNATURE)
            )
    # Unconfirmed publishes land when the broker gets to them: with CI's six pytest processes on
    # two cores, 800 of them onto a quorum queue once took longer than 10 s.
    wait_until(
        lambda: queue_depth(url, queue) == count, timeout=60, what=f"{count} letters in {queue}"
    )
    return bodies


@pytest.fixture(scope="module")
def rabbitmq4_node():
    """A node of the test's own with RabbitMQ 4's default for quorum queues set as a policy
    (the machine's node is never given policies). `--apply-to queues`: 3.10 has no
    `quorum_queues` yet, and `delivery-limit` only means something to quorum queues anyway."""
    from apis_lab.rabbit_nodes import RabbitNode  # the lab's private nodes (the workspace's)

    node = RabbitNode().start()
    try:
        node.ctl(
            "set_policy", "rabbitmq4-defaults", ".*", '{"delivery-limit": 20}',
            "--apply-to", "queues",
        )  # fmt: skip
        yield node
    finally:
        node.stop()


def test_a_dead_letter_queue_read_50_times_under_rabbitmq_4s_delivery_limit_keeps_every_letter(
    rabbitmq4_node,
):
    url = rabbitmq4_node.url
    topology = Topology.named(
        f"rmq4_{uuid.uuid4().hex[:6]}", RetryPolicy(), exchange="cqrs", queue_type=QUORUM
    )
    with amqp_channel(url) as channel:
        topology.declare(channel)
        # The control: the policy does drop a quorum queue's message given back 20 times.
        channel.queue_declare("control", durable=True, arguments={"x-queue-type": "quorum"})
        channel.basic_publish("", "control", b"x", pika.BasicProperties(delivery_mode=2))
        wait_until(lambda: queue_depth(url, "control") == 1)
        for _ in range(25):
            method, _, _ = channel.basic_get("control")
            if method is None:
                break
            channel.basic_nack(method.delivery_tag, requeue=True)
        wait_until(lambda: queue_depth(url, "control") == 0, what="the policy's limit at work")
    bodies = put_letters(url, topology.dead_letter_queue, 5)

    first = dead_letters.browse(topology, url=url)
    for _ in range(49):
        listing = dead_letters.browse(topology, url=url)
        assert [letter.id for letter in listing.letters] == [letter.id for letter in first.letters]
    assert queue_depth(url, topology.dead_letter_queue) == 5
    assert [letter.body for letter in listing.letters] == bodies  # same order
    for letter in listing.letters:  # no delivery ever counted; the signature kept
        assert letter.properties.headers.get("x-delivery-count", 0) == 0
        assert letter.properties.headers["x-cqrs-signature"] == SIGNATURE["x-cqrs-signature"]


def test_two_readers_take_turns_and_an_action_finds_what_the_operator_saw(rabbitmq_url, topology):
    put_letters(rabbitmq_url, topology.dead_letter_queue, 30)
    seen = [letter.id for letter in dead_letters.browse(topology).letters]
    stop, views, errors = threading.Event(), [], []

    def viewer() -> None:
        while not stop.is_set():
            try:
                views.append([letter.id for letter in dead_letters.browse(topology).letters])
            except Exception as exc:
                errors.append(exc)

    viewers = [threading.Thread(target=viewer) for _ in range(2)]
    for thread in viewers:
        thread.start()
    try:
        wait_until(lambda: len(views) >= 2, what="the viewers at work")
        purged = dead_letters.act_on(topology, dead_letters.PURGE, [seen[3], seen[17]])
        assert purged.done == [seen[3], seen[17]] and purged.missing == [] and not purged.error
        retried = dead_letters.act_on(topology, dead_letters.RETRY, [seen[29], "0" * 16])
        assert retried.done == [seen[29]] and retried.missing == ["0" * 16]
        count = len(views)
        wait_until(lambda: len(views) >= count + 2, what="the viewers after the actions")
    finally:
        stop.set()
        for thread in viewers:
            thread.join(timeout=30)
    assert not errors, errors
    # Each pass saw the whole queue, never a copy of another reader's (no `-2`), in order.
    left = [i for i in seen if i not in (seen[3], seen[17], seen[29])]
    for view in views:
        assert all("-" not in identity for identity in view)
        assert [i for i in seen if i in view] == view
        assert set(left) <= set(view)
    assert views[-1] == left
    assert queue_depth(rabbitmq_url, topology.queue) == 1  # the retried one


def test_a_reader_waits_for_the_other_then_gives_up_saying_so(rabbitmq_url, topology):
    with amqp_channel(rabbitmq_url) as channel:
        with (
            dead_letters.reader_lock(channel.connection, topology),
            pytest.raises(dead_letters.ReaderBusy, match="nothing was done"),
        ):
            dead_letters.browse(topology, lock_timeout=0.3)
        assert dead_letters.browse(topology, lock_timeout=0.3).total == 0  # freed


def reader_script(topology: Topology, url: str) -> str:
    """`cqrs_dead_letters dump` in a process of its own, on this test's queues."""
    return (
        "import django; django.setup()\n"
        "from django.conf import settings\n"
        f"settings.CQRS = {{**settings.CQRS, 'url': {url!r}, 'queue': {topology.queue!r},"
        f" 'exchange': {topology.exchange!r}}}\n"
        "settings.CQRS['replica'] = {**settings.CQRS['replica'], 'dead_letter_queue': None}\n"
        "from django.core.management import call_command\n"
        "call_command('cqrs_dead_letters', 'dump')\n"
    )


def test_a_reader_killed_halfway_loses_nothing(rabbitmq_url, topology):
    bodies = put_letters(rabbitmq_url, topology.dead_letter_queue, 800, confirm_each=False)
    tests = Path(__file__).parent
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "django_tools_test_settings",
        "PYTHONPATH": os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
    }
    reader = subprocess.Popen(
        [sys.executable, "-c", reader_script(topology, rabbitmq_url)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        printed = 0
        while printed < 200:  # well into its pass
            line = reader.stdout.readline()
            assert line, reader.stderr.read().decode()[-2000:]
            printed += 1
        os.kill(reader.pid, signal.SIGKILL)
        reader.wait(timeout=10)
    finally:
        if reader.poll() is None:
            reader.kill()
        reader.stdout.close()
        reader.stderr.close()
    # The letter it held comes back; the copy of it may be there too (a duplicate, never a loss).
    wait_until(lambda: queue_depth(rabbitmq_url, topology.dead_letter_queue) >= 800)
    listing = dead_letters.browse(topology)  # the lock went with the killed reader
    kept = [letter.body for letter in listing.letters]
    assert set(kept) == set(bodies)
    assert len(kept) in (800, 801)
    assert queue_depth(rabbitmq_url, topology.dead_letter_queue) == len(kept)


def test_a_dead_letter_queue_of_an_earlier_version_keeps_working_until_migrated(
    rabbitmq_url, topology
):
    """RabbitMQ refuses other arguments for an existing queue (406): a quorum dead-letter queue
    declared without today's is used as it is, and `cqrs_queues migrate` declares it again."""
    quorum = Topology.named(
        topology.queue, topology.policy, exchange=topology.exchange, queue_type=QUORUM
    )
    with amqp_channel(rabbitmq_url) as channel:
        for queue in topology.queues():
            channel.queue_delete(queue)
        channel.queue_declare(
            quorum.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
        )
    bodies = put_letters(rabbitmq_url, quorum.dead_letter_queue, 3)
    with amqp_channel(rabbitmq_url) as channel:
        quorum.declare(channel)  # no QueueTypeMismatch: kept as it is
        assert quorum.existing_type(channel, quorum.dead_letter_queue) == QUORUM  # not "classic"
    assert [letter.body for letter in dead_letters.browse(quorum).letters] == bodies

    with amqp_channel(rabbitmq_url) as channel:
        migrate(channel.connection, quorum, QUORUM)
    with amqp_channel(rabbitmq_url) as channel:
        # Today's arguments now: declaring with them is accepted, the old ones refused.
        channel.queue_declare(
            quorum.dead_letter_queue,
            durable=True,
            arguments=quorum.arguments(quorum.dead_letter_queue, QUORUM),
        )
        assert (
            quorum.arguments(quorum.dead_letter_queue, QUORUM)["x-delivery-limit"]
            == DEAD_LETTER_DELIVERY_LIMIT
        )
        with pytest.raises(ChannelClosedByBroker) as refused:
            channel.queue_declare(
                quorum.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
            )
        assert refused.value.reply_code == 406
    assert [letter.body for letter in dead_letters.browse(quorum).letters] == bodies
