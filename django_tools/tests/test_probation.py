"""Crash-looping messages: a message that kills every worker that handles it is set aside to the
dead-letter queue (reason `redelivered`) after CQRS_MAX_DELIVERIES deliveries, while the
messages delivered beside it are applied; the decision on its own, the markers, the headers of
the copy, the queues' delivery limits, and the whole loop against the real broker with workers
that die (a BaseException ends the worker's thread and closes its connection, so the broker
gives its unacknowledged messages back as it does when a process is killed)."""

import threading

import pika
import pytest
from dj_replica.models import BookReplica
from django.db import connections

from django_tools.connectivity import amqp_channel
from django_tools.replica import consumer as consumer_module
from django_tools.replica import dead_letters
from django_tools.replica.consumer import Consumer
from django_tools.replica.failures import (
    DELIVERIES,
    DELIVERY_COUNT,
    FIRST_FAILURE,
    PERMANENT,
    REDELIVERED,
    UNAUTHENTICATED,
    CrashLooping,
    SetAside,
    classify,
    failed_properties,
    fresh_properties,
)
from django_tools.replica.messages import InvalidMessage
from django_tools.replica.policy import RetryPolicy
from django_tools.replica.probation import Probation, decide, suspect
from django_tools.replica.topology import CLASSIC, QUORUM, Topology
from django_tools.signing import Unauthenticated
from django_tools.testing import queue_depth, wait_until

POLICY = RetryPolicy(base=1, factor=2, cap=4, max_retries=3, jitter=0)


# --- the decision ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tried", "broker_count", "expected"),
    [
        (0, None, (1, False)),  # first redelivery: tried alone once more
        (1, None, (2, False)),
        (2, None, (3, True)),  # the first delivery and two tries alone all died
        (0, 10, (10, False)),  # given back often (restarts), never seen dying alone: tried
        (1, 3, (3, True)),  # one death alone, and the broker counted 3 (several hosts)
        (1, 1, (2, False)),
    ],
)
def test_a_message_is_set_aside_after_max_deliveries_one_of_them_alone(
    tried, broker_count, expected
):
    assert decide(tried, broker_count, max_deliveries=3) == expected


def test_only_messages_delivered_before_are_on_probation():
    assert not suspect(False, pika.BasicProperties())
    assert not suspect(False, pika.BasicProperties(headers={DELIVERY_COUNT: 0}))
    assert suspect(True, pika.BasicProperties())
    assert suspect(False, pika.BasicProperties(headers={DELIVERY_COUNT: 2}))
    assert not suspect(False, pika.BasicProperties(headers={DELIVERY_COUNT: "x"}))


def test_markers_count_the_tries_that_never_ended_and_go_once_done(tmp_path):
    probation = Probation(tmp_path, max_deliveries=3)
    body, plain = b'{"poison": 1}', pika.BasicProperties()
    first = probation.begin("q", body, plain)
    assert (first.deliveries, first.set_aside) == (1, False)
    assert len(list(tmp_path.iterdir())) == 1  # written before the message is handled
    # The worker died: no `end`. The next worker's try…
    second = probation.begin("q", body, plain)
    assert (second.deliveries, second.set_aside) == (2, False)
    third = probation.begin("q", body, plain)
    assert (third.deliveries, third.set_aside) == (3, True)
    probation.end(third)
    assert list(tmp_path.iterdir()) == []
    # Another queue's message with the same body has a marker of its own; a try that ends
    # leaves nothing behind.
    other = probation.begin("other", body, plain)
    assert other.key != first.key and not other.set_aside
    probation.end(other)
    assert list(tmp_path.iterdir()) == []


def test_a_marker_left_half_written_counts_as_a_try(tmp_path):
    probation = Probation(tmp_path, max_deliveries=2)
    (tmp_path / Probation.key("q", b"x")).write_text("")
    assert probation.begin("q", b"x", None).set_aside


def test_an_unwritable_folder_leaves_it_to_the_brokers_limit(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    probation = Probation(blocker / "probation", max_deliveries=2)
    for _ in range(3):
        assert not probation.begin("q", b"x", None).set_aside
    assert "delivery limit" in caplog.text


def test_max_deliveries_below_two_is_refused():
    with pytest.raises(ValueError, match="at least 2"):
        Probation(None, max_deliveries=1)


# --- classification and the copy -------------------------------------------------------------


def test_crash_looping_is_redelivered_and_the_other_reasons_keep_their_order():
    assert classify(CrashLooping("x"), 0, POLICY) == SetAside(REDELIVERED)
    assert classify(Unauthenticated("x"), 0, POLICY) == SetAside(UNAUTHENTICATED)
    assert classify(InvalidMessage("x"), 0, POLICY) == SetAside(PERMANENT)


def test_the_copy_carries_the_deliveries_and_never_the_brokers_count():
    original = pika.BasicProperties(headers={DELIVERY_COUNT: 4, "trace": "t"}, message_id="m")
    dead = failed_properties(
        original, "book", CrashLooping("x"), retries=0, dead_reason=REDELIVERED, deliveries=4
    )
    assert dead.headers[DELIVERIES] == 4 and DELIVERY_COUNT not in dead.headers
    assert dead.headers["trace"] == "t" and dead.message_id == "m"
    retry = failed_properties(original, "book", OSError("x"), retries=1, expiration_ms=10)
    assert DELIVERY_COUNT not in retry.headers and DELIVERIES not in retry.headers
    replay = fresh_properties(pika.BasicProperties(headers={**dead.headers, DELIVERY_COUNT: 7}))
    # Retries from zero; its first failure kept (it is the same letter if it dies again).
    assert replay.headers == {"trace": "t", FIRST_FAILURE: dead.headers[FIRST_FAILURE]}


# --- the queues' delivery limits -------------------------------------------------------------


def test_every_quorum_queue_has_a_delivery_limit_and_a_dead_letter_target():
    topology = Topology.named("feed", POLICY, delivery_limit=25)
    main = topology.arguments("feed", QUORUM)
    assert main["x-delivery-limit"] == 25
    assert main["x-dead-letter-exchange"] == ""
    assert main["x-dead-letter-routing-key"] == "dead_letter_feed"
    assert main["x-dead-letter-strategy"] == "at-least-once"
    for tier in POLICY.tiers():
        arguments = topology.arguments(topology.retry_queue(tier), QUORUM)
        assert arguments["x-delivery-limit"] == 25
        assert arguments["x-dead-letter-routing-key"] == "feed"  # back to the queue, as always
    # Classic queues have no delivery count; the dead-letter queue has one it never reaches.
    assert topology.arguments("feed", CLASSIC) == {"x-queue-type": CLASSIC}
    assert topology.arguments("dead_letter_feed", QUORUM)["x-delivery-limit"] == 2**31 - 1
    assert topology.arguments("feed", QUORUM, limited=False) == {"x-queue-type": QUORUM}


# --- the whole loop, against the real broker ---------------------------------------------------

MARK = "kills-its-worker"


class WorkerDied(BaseException):
    """Ends a worker's thread as a SIGKILL ends its process: nothing after it runs in the
    worker, and its connection closes, so the broker gives back what it had not acknowledged."""


@pytest.fixture
def crash_hook(monkeypatch):
    decode = consumer_module.decode

    def decode_or_die(body):
        if MARK.encode() in body:
            raise WorkerDied
        return decode(body)

    monkeypatch.setattr(consumer_module, "decode", decode_or_die)


class Worker:
    def __init__(self, topology, url, **options) -> None:
        self.stop = threading.Event()
        self.died = False
        self.consumer = Consumer(topology, url, stop=self.stop, **options)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.consumer.run()
        except WorkerDied:
            self.died = True
        finally:
            connections.close_all()


@pytest.mark.django_db(transaction=True)
def test_a_message_that_kills_every_worker_goes_to_the_dlq_and_the_rest_is_applied(
    crash_hook, publish, event_payload, instance_data, rabbitmq_url, topology, settings, tmp_path
):
    settings.CQRS["replica"]["probation_dir"] = str(tmp_path / "probation")
    for pk in range(1, 11):
        publish(event_payload("SAVE", instance_data(pk)))
    publish(event_payload("SAVE", instance_data(99, title=f"{MARK} 1")))
    for pk in range(11, 21):
        publish(event_payload("SAVE", instance_data(pk)))

    deaths, worker = 0, None
    for _ in range(8):  # the supervisor: a new worker in place of each that died
        worker = Worker(topology, rabbitmq_url, prefetch=50, batch_size=25)
        wait_until(
            lambda w=worker: w.died or queue_depth(rabbitmq_url, topology.dead_letter_queue),
            20, what="a worker to die or the message to be set aside",
        )  # fmt: skip
        worker.thread.join(0.2)
        if not worker.died:
            break
        deaths += 1
    assert deaths == 3  # the batch's delivery, then two tries alone (CQRS_MAX_DELIVERIES=3)

    wait_until(lambda: BookReplica.objects.filter(pk__lte=20).count() == 20, what="the rest")
    assert not BookReplica.objects.filter(pk=99).exists()
    with amqp_channel(rabbitmq_url) as channel:
        letters = list(dead_letters.read(channel, topology))
    assert len(letters) == 1
    report, headers = letters[0].report, letters[0].properties.headers
    assert report.dead_reason == REDELIVERED and report.error_class.endswith(".CrashLooping")
    assert headers[DELIVERIES] == 3 and MARK in report.payload["instance_data"]["title"]
    assert worker.consumer.stats["dead_lettered"] == 1
    wait_until(lambda: list((tmp_path / "probation").iterdir()) == [], what="markers removed")

    # The last worker goes on: new writes keep arriving.
    publish(event_payload("SAVE", instance_data(21)))
    wait_until(lambda: BookReplica.objects.filter(pk=21).exists(), what="a write after it")
    assert queue_depth(rabbitmq_url, topology.queue) == 0
    worker.stop.set()
    worker.thread.join(10)
    assert not worker.thread.is_alive()


def test_a_try_the_connection_ended_is_not_counted_as_a_death(topology, rabbitmq_url, tmp_path):
    """A forced connection close under a try on probation: the worker lives on, so its marker
    goes (left, the next delivery counted a death, and a healthy message given back a few times
    was set aside). A try that does not return (the worker died) keeps it."""
    from pika.exceptions import ConnectionClosedByBroker

    from django_tools.replica.consumer import Consumer, Delivery

    consumer = Consumer(topology, rabbitmq_url, probation=Probation(tmp_path, max_deliveries=3))
    delivery = Delivery(1, "book", pika.BasicProperties(), b'{"a": 1}', redelivered=True)

    def closed(*_args, **_kwargs):
        raise ConnectionClosedByBroker(320, "CONNECTION_FORCED")

    consumer._handle = closed
    with pytest.raises(ConnectionClosedByBroker):
        consumer._on_probation(None, delivery)
    assert list(tmp_path.iterdir()) == []

    class Died(BaseException):
        """What stands for a worker's death here: nothing after it runs."""

    def dies(*_args, **_kwargs):
        raise Died

    consumer._handle = dies
    with pytest.raises(Died):
        consumer._on_probation(None, delivery)
    assert len(list(tmp_path.iterdir())) == 1
