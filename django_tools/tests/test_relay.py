"""The relays against the real broker: what the outbox holds reaches the exchange, in order, in
django-cqrs's format, and is marked published only once confirmed."""

import threading
import time
from decimal import Decimal

import pytest
from dj_master.models import Book
from dj_replica.models import BookReplica
from django.db import connections, transaction

from django_tools.outbox.models import OutboxEvent
from django_tools.outbox.relays.amqp import AmqpRelay as Relay
from django_tools.outbox.relays.lock import RelayLock
from django_tools.testing import STOCK_PAYLOAD_KEYS, RunningRelay, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def start_relay(rabbitmq_url, cqrs_exchange):
    running: list[RunningRelay] = []

    def start(**options) -> RunningRelay:
        relay = RunningRelay(Relay(rabbitmq_url, cqrs_exchange, **options))
        running.append(relay)
        return relay

    yield start
    for relay in running:
        relay.stop()


@pytest.fixture
def replica_queue(listening_queue):
    return listening_queue.bind("book")


def make(isbn: str, **kw) -> Book:
    return Book.objects.create(isbn=isbn, title="Dune", price=Decimal("7.5"), **kw)


@transaction.atomic
def update(pk: int, **changes) -> Book:
    book = Book.objects.select_for_update().get(pk=pk)
    for field, value in changes.items():
        setattr(book, field, value)
    book.save()
    return book


@transaction.atomic
def delete(pk: int) -> None:
    Book.objects.select_for_update().get(pk=pk).delete()


def test_create_update_delete_reach_the_exchange_in_stock_format_and_order(
    replica_queue, start_relay
):
    book = make("B-1", copies=2)
    update(book.pk, price=Decimal("8"))
    delete(book.pk)
    start_relay()

    received = [replica_queue.get() for _ in range(3)]
    properties, first = received[0]
    assert set(first) == STOCK_PAYLOAD_KEYS
    assert properties.delivery_mode == 2 and properties.content_type == "text/plain"
    assert [(b["signal_type"], b["instance_data"]["cqrs_revision"]) for _, b in received] == [
        ("SAVE", 0),
        ("SAVE", 1),
        ("DELETE", 2),
    ]
    assert first["instance_data"]["price"] == "7.50"
    # The relay marks rows published once the broker confirmed them, which may be a moment
    # after a queue already delivered them.
    wait_until(
        lambda: OutboxEvent.objects.filter(published_at__isnull=True).count() == 0,
        what="every row marked published",
    )


def test_writes_made_while_the_relay_runs_are_published_and_rollbacks_never(
    replica_queue, start_relay
):
    running = start_relay()
    with pytest.raises(RuntimeError), transaction.atomic():
        make("GONE")
        raise RuntimeError("abort")
    for n in range(50):
        make(f"LIVE-{n}")
    isbns = [replica_queue.get()[1]["instance_data"]["isbn"] for _ in range(50)]
    assert isbns == [f"LIVE-{n}" for n in range(50)]
    running.stop()
    assert running.relay.stats.published == 50
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()


def test_an_unroutable_event_is_still_marked_published(start_relay, rabbitmq_url):
    make("NOBODY-LISTENS")  # no queue is bound to the test exchange
    running = start_relay()
    deadline = time.monotonic() + 10
    while OutboxEvent.objects.filter(published_at__isnull=True).exists():
        assert time.monotonic() < deadline, "the row was never marked published"
        time.sleep(0.02)
    running.stop()
    assert running.relay.stats.returned == 1


def test_a_second_relay_stands_by_while_the_first_publishes(start_relay, replica_queue):
    first = start_relay()
    time.sleep(0.5)  # the first takes the lock
    second = start_relay()
    make("ONE")
    replica_queue.get()
    # The broker delivers before the relay has its confirm: wait for the relay's own count.
    wait_until(lambda: first.relay.stats.published == 1, what="the first relay's confirm")
    assert second.relay.stats.published == 0
    first.stop()  # the standby takes over
    make("TWO")
    assert replica_queue.get(timeout=10)[1]["instance_data"]["isbn"] == "TWO"
    wait_until(lambda: second.relay.stats.published == 1, what="the standby's confirm")
    assert first.relay.stats.published == 1


def test_a_change_of_the_master_reaches_its_replica_in_this_process(start_relay, consumers):
    """dj_master and dj_replica share CQRS_ID "book" (see the test settings): a write goes
    outbox → relay → broker → consumer → replica row, and applying it writes no outbox row."""
    consumers.start()
    start_relay()
    book = make("E2E-1", copies=3)
    update(book.pk, price=Decimal("9.99"))
    wait_until(
        lambda: BookReplica.objects.filter(pk=book.pk, cqrs_revision=1).exists(),
        what="the update on the replica",
    )
    replica = BookReplica.objects.get(pk=book.pk)
    assert (replica.isbn, replica.title, replica.copies, str(replica.price)) == (
        "E2E-1",
        "Dune",
        3,
        "9.99",
    )
    delete(book.pk)
    wait_until(lambda: not BookReplica.objects.filter(pk=book.pk).exists(), what="the delete")
    events = OutboxEvent.objects.order_by("id").values_list("cqrs_id", "signal_type", "revision")
    assert list(events) == [
        ("book", "SAVE", 0),
        ("book", "SAVE", 1),
        ("book", "DELETE", 2),
    ]


def test_the_relay_lock_is_exclusive():
    first, second = RelayLock(), RelayLock()
    try:
        assert first.try_acquire()
        assert not second.try_acquire()
        first.release()
        # PostgreSQL drops a session's advisory lock when its backend has gone, a moment after
        # the client closed the connection: the standby gets it then (it polls every second).
        wait_until(second.try_acquire, timeout=5, interval=0.05, what="the released lock")
    finally:
        first.release()
        second.release()


def test_the_celery_relay_sends_one_apply_task_per_change_and_marks_them(rabbitmq_url):
    """REPLICATION_MODE=celery: the same outbox, relayed as `replica.apply_event` tasks."""
    import json
    import uuid

    from celery import current_app

    from django_tools.connectivity import amqp_channel
    from django_tools.outbox.relays.celery import CeleryRelay

    queue = f"test_celery_{uuid.uuid4().hex[:8]}"
    book = make("CEL-1")
    update(book.pk, copies=4)
    relay = CeleryRelay(current_app, queue)
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while OutboxEvent.objects.filter(published_at__isnull=True).exists():
        assert time.monotonic() < deadline, "the outbox was not relayed"
        time.sleep(0.02)
    relay.request_stop()
    thread.join(10)
    connections.close_all()
    tasks = []
    with amqp_channel(rabbitmq_url) as channel:
        while (message := channel.basic_get(queue, auto_ack=True))[0] is not None:
            tasks.append(message)
        channel.queue_delete(queue)
        channel.exchange_delete(queue)  # Celery's, named like its queue
    assert [props.headers["task"] for _, props, _ in tasks] == ["replica.apply_event"] * 2
    payloads = [json.loads(json.loads(body)[0][0]) for _, _, body in tasks]
    assert [p["instance_data"]["cqrs_revision"] for p in payloads] == [0, 1]
    assert relay.stats.published == 2


def test_after_the_broker_closes_its_connection_the_relay_publishes_everything_newer(
    broker_vhost,
):
    """Confirm tags belong to a channel: after a reconnect the new channel counts from 1 again.
    A relay that kept counting matched no confirm, republished its oldest batch every
    `confirm_timeout` and never sent anything newer (seen after `rabbitmqctl stop_app`)."""
    from django_tools.testing import ListeningQueue

    exchange = "cqrs_fault_test"
    queue = ListeningQueue(broker_vhost.url, exchange).bind("book")
    running = RunningRelay(Relay(broker_vhost.url, exchange, batch_size=50, confirm_timeout=2))
    try:
        for n in range(60):
            make(f"BEFORE-{n}")
        assert [queue.get()[1]["instance_data"]["isbn"] for _ in range(60)][-1] == "BEFORE-59"
        wait_until(lambda: running.relay.stats.published == 60, what="the first 60 confirms")
        queue.close()

        broker_vhost.close_connections()
        wait_until(lambda: running.relay.stats.reconnects >= 1, what="the relay to reconnect")
        queue = ListeningQueue(broker_vhost.url, exchange).bind("book")
        for n in range(600):
            make(f"AFTER-{n}")
        # Every newer event reaches the queue once, in order, and the backlog drains to 0.
        isbns = [queue.get(timeout=10)[1]["instance_data"]["isbn"] for _ in range(600)]
        assert isbns == [f"AFTER-{n}" for n in range(600)]
        wait_until(
            lambda: not OutboxEvent.objects.filter(published_at__isnull=True).exists(),
            what="the outbox backlog to drain",
        )
        # Rows are marked in the database before the relay counts them: the count follows.
        wait_until(lambda: running.relay.stats.published == 660, what="every row counted")
    finally:
        running.stop()
        queue.close()


def test_confirmed_rows_are_marked_published_in_groups_and_never_sent_twice(
    replica_queue, start_relay
):
    """At low load a mark per event was the relay's costliest step: confirmed rows wait for a
    batch's worth (or `mark_delay`, here too long to matter), unread meanwhile; the rest are
    marked when the session ends."""
    running = start_relay(batch_size=5, mark_delay=600)
    relay = running.relay
    for n in range(3):
        make(f"GROUP-{n}")
    assert [replica_queue.get()[1]["instance_data"]["isbn"] for _ in range(3)] == [
        "GROUP-0", "GROUP-1", "GROUP-2",
    ]  # fmt: skip
    wait_until(lambda: relay.stats.confirmed == 3, what="three confirms")
    assert relay.stats.published == 0
    assert OutboxEvent.objects.filter(published_at__isnull=True).count() == 3

    for n in range(3, 6):
        make(f"GROUP-{n}")
    # The fifth confirmed row completes a batch's worth: the five are marked at once.
    wait_until(lambda: relay.stats.published >= 5, what="a group of five marked")
    assert [replica_queue.get()[1]["instance_data"]["isbn"] for _ in range(3)] == [
        "GROUP-3", "GROUP-4", "GROUP-5",
    ]  # fmt: skip
    wait_until(lambda: relay.stats.confirmed == 6, what="the sixth confirm")

    running.stop()  # the end of the session marks what is left
    assert relay.stats.published == 6
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()
    # Unmarked rows were skipped by every read: nothing reached the queue twice (the relay is
    # stopped, and the broker routes a message before it confirms it).
    assert replica_queue.channel.basic_get(replica_queue.name, auto_ack=True)[0] is None
