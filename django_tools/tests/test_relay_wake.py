"""Waking the relay at commit (`django_tools.outbox.wake`): the local waker on its own, the
writer's one wake-up per committed transaction, and a relay with a long poll publishing a
commit well before that poll, against the real broker, on the suite's database (SQLite, or
PostgreSQL with DATABASE_URL)."""

import json
import socket
import time
import uuid
from decimal import Decimal

import pytest
from dj_master.models import Book
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from django_tools.outbox import wake
from django_tools.outbox.models import OutboxEvent
from django_tools.outbox.relays.base import Relay
from django_tools.outbox.selectors import unpublished_rows
from django_tools.outbox.wake import LocalWaker, Waker, local_address, poke, waker_for
from django_tools.testing import RunningRelay, wait_until

#: The relays here poll this rarely: whatever they publish sooner was woken.
LONG_POLL = 5.0


def make(isbn: str) -> Book:
    return Book.objects.create(isbn=isbn, title="Dune", price=Decimal("7.5"))


# --- the local waker, on its own ------------------------------------------------------------


def test_a_poke_wakes_the_local_waker_and_pokes_coalesce(tmp_path):
    address = str(tmp_path / "db.relay.wake")
    waker = LocalWaker(address)
    try:
        waker.listen()
        assert not waker.wait(0.05)  # nothing yet
        for _ in range(3):
            poke(address)
        started = time.monotonic()
        assert waker.wait(5)
        assert time.monotonic() - started < 1
        assert not waker.consume()  # the three were taken at once
    finally:
        waker.dispose()
    assert not (tmp_path / "db.relay.wake").exists()


def test_an_interrupt_ends_a_wait_without_a_wake_up(tmp_path):
    waker = LocalWaker(str(tmp_path / "db.relay.wake"))
    try:
        waker.listen()
        waker.interrupt()
        started = time.monotonic()
        assert not waker.wait(5)
        assert time.monotonic() - started < 1
    finally:
        waker.dispose()


def test_poking_nobody_a_stale_socket_or_a_full_queue_never_raises(tmp_path):
    address = str(tmp_path / "db.relay.wake")
    poke(address)  # no socket there
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(address)
    stale.close()  # a relay killed without unlinking it
    poke(address)
    waker = LocalWaker(address)
    try:
        waker.listen()  # takes the stale address over
        for _ in range(1000):  # far more than the kernel queues: EAGAIN, swallowed
            poke(address)
        assert waker.wait(1)
    finally:
        waker.dispose()


def test_a_closing_relay_leaves_the_next_ones_socket_alone(tmp_path):
    address = str(tmp_path / "db.relay.wake")
    first, second = LocalWaker(address), LocalWaker(address)
    try:
        first.listen()
        second.listen()  # the next lock holder, before the first closed
        first.close()
        poke(address)
        assert second.wait(1)
    finally:
        first.dispose()
        second.dispose()


# --- the writer's end -----------------------------------------------------------------------


def _wakes(conn) -> int:
    """The transaction's plain wake-ups (not a row's own, on SQLite)."""
    return sum(
        isinstance(entry[1], wake._Wake) and not entry[1].payload for entry in conn.run_on_commit
    )


def make_two(isbn: str) -> None:
    """One write of two rows (a one-row write carries its row instead: below)."""
    Book.cqrs.bulk_create(
        [Book(isbn=f"{isbn}-{n}", title="Dune", price=Decimal("7.5")) for n in (1, 2)]
    )


@pytest.mark.django_db(transaction=True)
def test_one_wake_up_per_transaction_and_none_for_a_rolled_back_savepoint():
    write = make_two if wake.carries(connection) else make
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        write("W-1")
        write("W-2")
        assert _wakes(connection) == 1
        with pytest.raises(RuntimeError), transaction.atomic():
            write("W-3")
            raise RuntimeError("savepoint rolled back")
        with transaction.atomic():
            write("W-4")
        assert _wakes(connection) == 1
    notifies = [q for q in queries.captured_queries if q["sql"].startswith("NOTIFY")]
    assert len(notifies) == (1 if connection.vendor == "postgresql" else 0)


def test_the_wake_up_channel_is_named_from_the_secret_key():
    """A wake-up carries its row: a session that cannot name the channel cannot LISTEN to it."""
    from django.test import override_settings

    named = wake.channel()
    assert named.startswith(wake.CHANNEL_PREFIX) and len(named) == len(wake.CHANNEL_PREFIX) + 24
    with override_settings(SECRET_KEY="another key, " * 5):
        assert wake.channel() != named


@pytest.mark.django_db(transaction=True)
def test_a_one_row_write_wakes_the_relay_with_its_row_as_the_relay_reads_it():
    """A `save()` wakes the relay at its commit with the row in the payload, as
    `unpublished_rows` returns it; one per write, none for a rolled-back savepoint; a row too
    large for a payload wakes with an empty one (the relay reads). PostgreSQL: a NOTIFY's
    payload; SQLite: a datagram's."""
    assert wake.carries(connection)  # the test database is a file on SQLite: it has a socket
    waker = waker_for()
    try:
        waker.listen()
        with transaction.atomic():
            make("C-1")
            with pytest.raises(RuntimeError), transaction.atomic():
                make("C-GONE")
                raise RuntimeError("savepoint rolled back")
            make("C-2")
            assert _wakes(connection) == 0  # no NOTIFY of its own at the commit
            assert not waker.wait(0.2)  # nothing before the commit
        assert waker.wait(2)
        carried = waker.take_carried()
        assert carried == [tuple(row) for row in unpublished_rows(500)]
        assert len(carried) == 2

        Book.objects.create(isbn="C-BIG", title="x", summary="x" * 9000, price=Decimal("1"))
        assert waker.wait(2)
        assert waker.take_carried() is None  # an empty payload: read to find it

        unsigned = '[1, "book", "{}", "", ""]'
        if connection.vendor == "postgresql":  # any session may NOTIFY: unsigned, not a row
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_notify(%s, %s)", [wake.channel(), unsigned])
        else:  # the socket is the owner's only, and still: unsigned, not a row
            wake.poke(wake.local_address(connection), unsigned.encode())
        assert waker.wait(2)
        assert waker.take_carried() is None
    finally:
        waker.dispose()


@pytest.mark.django_db(transaction=True)
def test_a_commit_wakes_the_relays_end_and_a_rollback_does_not():
    waker = waker_for()
    try:
        waker.listen()
        assert waker.fileno() is not None, "the suite's database should have wake-ups"
        with pytest.raises(RuntimeError), transaction.atomic():
            make("GONE")
            raise RuntimeError("abort")
        assert not waker.wait(0.3)
        make("KEPT")
        assert waker.wait(2)
    finally:
        waker.dispose()


@pytest.mark.django_db(transaction=True)
def test_a_write_succeeds_when_no_relay_listens():
    address = local_address(connection)
    if address is not None:  # SQLite: a stale socket file where the relay was
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        stale.bind(address)
        stale.close()
    try:
        with transaction.atomic():
            make("ALONE-1")
        make("ALONE-2")  # autocommit around the save: its own transaction
    finally:
        if address is not None:
            import os

            os.unlink(address)
    assert OutboxEvent.objects.filter(published_at__isnull=True).count() == 2


# --- a relay, woken -------------------------------------------------------------------------


@pytest.fixture(params=["amqp", "celery"])
def start_relay(request, rabbitmq_url, cqrs_exchange):
    running: list[RunningRelay] = []
    queues: list[str] = []

    def start(**options) -> RunningRelay:
        if request.param == "amqp":
            from django_tools.outbox.relays.amqp import AmqpRelay

            relay = AmqpRelay(rabbitmq_url, cqrs_exchange, **options)
        else:
            from celery import current_app

            from django_tools.outbox.relays.celery import CeleryRelay

            queue = f"test_celery_{uuid.uuid4().hex[:8]}"
            queues.append(queue)
            relay = CeleryRelay(current_app, queue, **options)
        running.append(RunningRelay(relay))
        return running[-1]

    yield start
    for relay in running:
        relay.stop()
    if queues:
        from django_tools.connectivity import amqp_channel

        with amqp_channel(rabbitmq_url) as channel:
            for queue in queues:
                channel.queue_delete(queue)
                channel.exchange_delete(queue)


@pytest.mark.django_db(transaction=True)
def test_an_idle_relay_publishes_a_commit_long_before_its_next_poll(start_relay):
    running = start_relay(poll_min=LONG_POLL, poll_max=LONG_POLL)
    relay = running.relay
    make("FIRST")
    wait_until(lambda: relay.stats.published == 1, what="the first event published")
    wait_until(lambda: relay.idle, what="the relay idle, its next poll 5 s away")
    started = time.monotonic()
    make("SECOND")
    wait_until(lambda: relay.stats.published == 2, timeout=LONG_POLL, what="the second event")
    assert time.monotonic() - started < 1.0
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()


@pytest.mark.django_db(transaction=True)
def test_a_lost_wake_up_costs_only_the_poll(start_relay):
    """A relay that is never woken (its waker never says so) still publishes, at its poll."""
    running = start_relay(poll_min=0.3, poll_max=0.3, waker=Waker())
    make("POLLED")
    wait_until(lambda: running.relay.stats.published == 1, timeout=5, what="the polled event")


@pytest.mark.django_db(transaction=True)
def test_a_relay_whose_listening_session_is_killed_listens_again(start_relay):
    """PostgreSQL: the server ends the LISTEN session; the relay polls meanwhile, listens again
    at its next lock check, and is woken again."""
    if connection.vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    running = start_relay(poll_min=LONG_POLL, poll_max=LONG_POLL, lock_timeout=1.5)
    relay = running.relay
    wait_until(lambda: relay.idle and _listening(relay.waker), what="an idle relay")
    killed = _listening(relay.waker)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [killed])
    wait_until(lambda: _listening(relay.waker) not in (None, killed), what="a new LISTEN session")
    wait_until(lambda: relay.idle, what="the relay idle again")
    started = time.monotonic()
    make("AFTER-KILL")
    wait_until(lambda: relay.stats.published == 1, timeout=LONG_POLL, what="the event")
    assert time.monotonic() - started < 1.0


def _listening(waker) -> int | None:
    """The backend pid of a PostgreSQL waker's LISTEN session (None: not listening)."""
    pg = waker._pg  # read once: the relay's thread replaces it
    if pg is None or pg.closed or waker.fileno() is None:
        return None
    return pg.info.backend_pid


class _Transport(Relay):
    """Only what `Relay.woken` asks of a transport: whether batches wait for confirms and
    whether another one fits."""

    in_flight = 0
    max_in_flight = 2

    def describe(self) -> str:
        return "nowhere"

    def serve(self) -> None:
        return None

    def send(self, rows) -> None:
        return None

    def awaiting_confirms(self) -> bool:
        return self.in_flight > 0

    def ready_to_read(self) -> bool:
        return self.in_flight < self.max_in_flight


@pytest.mark.parametrize(
    ("idle", "in_flight", "steps"),
    [
        (True, 0, True),  # idle: the pause is cut short
        (False, 1, True),  # a batch waits for its confirms, another fits: send now
        (False, 2, False),  # as many in flight as allowed: the next confirm reads
    ],
)
def test_a_wake_up_calls_a_turn_when_the_relay_is_idle_or_has_room_in_flight(
    tmp_path, idle, in_flight, steps
):
    address = str(tmp_path / "db.relay.wake")
    waker = LocalWaker(address)
    relay = _Transport(waker=waker)
    try:
        waker.listen()
        relay._idle, relay.in_flight = idle, in_flight
        assert not relay.woken()  # nothing came
        poke(address)  # queued on the socket by the time sendto returns
        assert relay.woken() is steps
    finally:
        waker.dispose()


# --- one read per event at low load -----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_at_low_load_the_relay_reads_the_outbox_once_per_event(start_relay, monkeypatch):
    """Each commit wakes the relay, which reads its row; the turns after the send, after the
    confirm and after the mark know the outbox had nothing else (each of their reads found
    nothing, every event) and skip their reads."""
    relay, reads = _one_write_at_a_time(start_relay, monkeypatch, "LOW")
    assert reads <= 4 + 1  # one per event (and at most one more turn's)
    assert relay.stats.reads_skipped >= 4


def _one_write_at_a_time(start_relay, monkeypatch, prefix: str, writes: int = 4):
    """An idle relay; `writes` saves, each once the last is published and the relay idle
    again: the relay, and how many outbox reads it made meanwhile."""
    from django_tools.outbox.relays import base

    reads = []
    monkeypatch.setattr(
        base, "unpublished_rows", lambda *a, **k: reads.append(1) or unpublished_rows(*a, **k)
    )
    relay = start_relay(poll_min=LONG_POLL, poll_max=LONG_POLL).relay
    wait_until(lambda: relay.idle, what="the relay idle")
    before = len(reads)
    for n in range(writes):
        make(f"{prefix}-{n}")
        wait_until(lambda n=n: relay.stats.published == n + 1, what=f"event {n} marked")
        wait_until(lambda: relay.idle, what="the relay idle again")
    return relay, len(reads) - before


@pytest.mark.django_db(transaction=True)
def test_a_lower_id_committed_after_a_higher_one_is_published_at_its_wake_up(start_relay):
    """PostgreSQL hands out ids at insert, not at commit: a row can commit after one with a
    higher id has been sent and confirmed. Its wake-up's read starts above it (past the
    confirmed rows, not marked yet); the read from the oldest row, once they are marked,
    finds it — not the idle poll, seconds later."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite hands out ids in commit order: one writer at a time")
    import threading

    running = start_relay(poll_min=LONG_POLL, poll_max=LONG_POLL)
    relay = running.relay
    wait_until(lambda: relay.idle, what="the relay idle")
    inserted, commit = threading.Event(), threading.Event()

    def late() -> None:
        try:
            with transaction.atomic():
                make("LATE")  # its outbox row takes the lower id
                inserted.set()
                commit.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=late)
    thread.start()
    try:
        assert inserted.wait(10)
        make("EARLY")
        wait_until(lambda: relay.stats.confirmed == 1, what="the higher id confirmed")
    finally:
        commit.set()
        thread.join(10)
    started = time.monotonic()
    wait_until(lambda: relay.stats.published == 2, timeout=LONG_POLL, what="the lower id")
    assert time.monotonic() - started < 1.0
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()


# --- rows carried by their wake-ups (PostgreSQL) ----------------------------------------------


class _CarryingWaker(Waker):
    """Wake-ups with the given payloads, taken at the next `consume`."""

    def __init__(self, *payloads) -> None:
        super().__init__()
        self.payloads = list(payloads)

    def fileno(self) -> int | None:
        return None

    def consume(self) -> bool:
        payloads, self.payloads = self.payloads, []
        for payload in payloads:
            self._took(payload)
        return bool(payloads)


def _row(outbox_id: int) -> str:
    return wake.carried_payload((outbox_id, "book", '{"x": 1}', "", ""))


def test_a_wake_up_carries_a_row_only_signed_and_in_the_shape_the_relay_reads():
    waker = _CarryingWaker(_row(7), _row(8))
    assert waker.consume()
    assert waker.take_carried() == [
        (7, "book", '{"x": 1}', "", ""),
        (8, "book", '{"x": 1}', "", ""),
    ]
    unsigned = json.dumps([9, "book", '{"x": 1}', "", ""])
    forged = "0" * 64 + unsigned  # anyone may NOTIFY: a row not signed by us is not published
    tampered = _row(9).replace('"book"', '"other"')
    malformed = wake._mac("[1, 2]") + "[1, 2]"
    for other in ("", "not json", unsigned, forged, tampered, malformed):
        waker.payloads = [_row(9), other]
        assert waker.consume()
        assert waker.take_carried() is None, other  # one plain wake-up among them: read
    assert waker.take_carried() == []  # taken: nothing since
    assert wake.carried_payload((10, "book", "x" * 9000, "", "")) == ""  # too large: plain


def _carrying_relay(*payloads, gapless: bool = False) -> _Transport:
    waker = _CarryingWaker(*payloads)
    waker.gapless = gapless
    relay = _Transport(waker=waker, poll_max=LONG_POLL, batch_size=3)
    relay._drained, relay._high, relay._read_at = True, 10, time.monotonic()
    relay._idle = True
    return relay


@pytest.mark.parametrize(
    ("payloads", "change", "sent"),
    [
        ((_row(11), _row(12)), None, True),  # above every row read: sent as they came
        ((_row(10),), None, False),  # at or below: a read may have sent it already
        ((_row(11), "", _row(12)), None, False),  # one wake-up carried nothing
        ((_row(11), _row(12), _row(13), _row(14)), None, False),  # more than a batch
        ((_row(11),), "not drained", False),  # the last read left rows past its cursor
        ((_row(11),), "woken", False),  # a wake-up came unseen (a lock check)
        ((_row(11),), "read long ago", False),  # a row no wake-up announces waits no longer
    ],
)
def test_carried_rows_are_sent_without_a_read_only_when_they_are_all_that_is_new(
    payloads, change, sent
):
    relay = _carrying_relay(*payloads)
    if change == "not drained":
        relay._drained = False
    elif change == "woken":
        relay.wakeup_came()
    elif change == "read long ago":
        relay._read_at -= LONG_POLL
    assert relay.woken()  # idle: the turn comes now, and decides
    assert (bool(relay._carried) and relay._all_new(relay._carried)) is sent


@pytest.mark.django_db(transaction=True)
def test_at_low_load_the_relay_sends_what_the_wake_ups_carry(start_relay, monkeypatch):
    """Each `save()` wakes the relay with its row: the relay publishes it without a read."""
    assert wake.carries(connection)
    relay, reads = _one_write_at_a_time(start_relay, monkeypatch, "CARRIED")
    # SQLite (ids without gaps): the session's first row follows no row it read — one read.
    first = 1 if relay.waker.gapless else 0
    assert relay.stats.carried == 4 - first
    assert reads == first
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()
    assert relay.stats.confirmed == 4  # each sent once


@pytest.mark.parametrize(
    ("payloads", "sent"),
    [
        ((_row(11), _row(12)), True),  # the next ids after the highest read: all that is new
        ((_row(12), _row(11)), True),  # in any order
        ((_row(12),), False),  # 11's wake-up was lost (a full datagram queue): read
        ((_row(11), _row(13)), False),  # a gap between them: read
    ],
)
def test_where_ids_have_no_gaps_a_gap_in_the_carried_rows_means_a_lost_wake_up(payloads, sent):
    """SQLite gives ids in commit order without gaps, and drops datagrams when the relay's
    queue is full: carried rows are all that is new only if they follow the highest one on."""
    relay = _carrying_relay(*payloads, gapless=True)
    assert relay.woken()
    assert relay._all_new(relay._carried) is sent
    assert _carrying_relay(*payloads)._all_new(
        [tuple(json.loads(p[64:])) for p in payloads]
    )  # PostgreSQL: ids have gaps, and a NOTIFY is never dropped
