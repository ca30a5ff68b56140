"""`base.Relay` drives both transports the same way, against the real broker: a relay that
loses its lock stops publishing and stands by, and publishes again once the lock is back. (The
lock is a switch here: what is tested is the lifecycle, not PostgreSQL — `test_relay.py` has the
real lock.)"""

import uuid
from decimal import Decimal

import pytest
from dj_master.models import Book

from django_tools.heartbeat import Heartbeat, read
from django_tools.outbox.models import OutboxEvent
from django_tools.outbox.relays.base import Relay
from django_tools.testing import RunningRelay, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


class SwitchLock:
    """A relay lock a test takes away (a standby took it) and gives back."""

    check_every = 0.0  # the relay asks before every batch

    def __init__(self) -> None:
        self.held = self.free = True
        self.refused = 0  # attempts to take it while it was not free

    def try_acquire(self) -> bool:
        if self.free:
            self.held = True
            return True
        self.refused += 1
        return False

    def still_held(self) -> bool:
        return self.held

    def release(self) -> None:
        self.held = False

    def take_away(self) -> None:
        self.free = self.held = False

    def give_back(self) -> None:
        self.free = True


@pytest.fixture(params=["amqp", "celery"])
def make_relay(request, rabbitmq_url, cqrs_exchange):
    made = []

    def make(**options) -> Relay:
        if request.param == "amqp":
            from django_tools.outbox.relays.amqp import AmqpRelay

            relay = AmqpRelay(rabbitmq_url, cqrs_exchange, **options)
        else:
            from celery import current_app

            from django_tools.outbox.relays.celery import CeleryRelay

            relay = CeleryRelay(current_app, f"test_celery_{uuid.uuid4().hex[:8]}", **options)
        made.append(relay)
        return relay

    yield make
    for relay in made:
        if isinstance(getattr(relay, "queue", None), str):
            from django_tools.connectivity import amqp_channel

            with amqp_channel(rabbitmq_url) as channel:
                channel.queue_delete(relay.queue)
                channel.exchange_delete(relay.queue)  # Celery's, named like its queue


def unpublished(isbn: str) -> bool:
    book = Book.objects.get(isbn=isbn)
    return OutboxEvent.objects.filter(instance_pk=str(book.pk), published_at__isnull=True).exists()


def test_a_relay_that_loses_its_lock_stops_publishing_until_it_has_it_again(make_relay, tmp_path):
    lock = SwitchLock()
    beats = tmp_path / "relay.json"
    relay = make_relay(lock=lock, heartbeat=Heartbeat(beats, every=0.05))

    running = RunningRelay(relay)
    try:
        Book.objects.create(isbn="HELD", title="Dune", price=Decimal("1"))
        wait_until(lambda: relay.stats.published == 1, what="the first row published")

        lock.take_away()
        wait_until(lambda: lock.refused >= 1, what="the relay standing by")
        # The heartbeat is written every 0.05 s, after the refusal: on a loaded machine the file
        # can still say what the relay was doing a moment before.
        wait_until(lambda: read(beats).state == "standby", what="the heartbeat standing by")
        assert relay.stats.reconnects >= 1  # the session ended, as any lost one does
        Book.objects.create(isbn="WHILE-LOST", title="Dune", price=Decimal("2"))
        wait_until(lambda: lock.refused >= 2, what="another try for the lock")
        assert unpublished("WHILE-LOST") and relay.stats.published == 1

        lock.give_back()
        wait_until(lambda: not unpublished("WHILE-LOST"), what="publishing with the lock back")
        # The row is marked in the database before the relay counts it: the count follows.
        wait_until(lambda: relay.stats.published == 2, what="the second row counted")
        wait_until(lambda: read(beats).state == "publishing", what="the heartbeat publishing")
    finally:
        running.stop()
    assert not lock.held  # released on the way out
