"""Bytes, not only counts: a relay batch of large outbox rows and a consumer's prefetch of large
messages hold a bounded amount of memory. With a 2.5 MB row, a batch of 500 rows (or a prefetch
of 500 messages) held over a gigabyte."""

import threading
import tracemalloc
from unittest import mock

import orjson
import pytest
from django.utils import timezone

from django_tools import limits
from django_tools.outbox.models import OutboxEvent
from django_tools.outbox.selectors import unpublished_rows
from django_tools.replica import messages

pytestmark = pytest.mark.django_db


def outbox_rows(*sizes: int, char: str = "x") -> list[int]:
    """Pending rows whose bodies are `size` bytes each: a JSON string of `char` ("é" is two
    bytes)."""
    now = timezone.now()
    width = len(char.encode())
    rows = OutboxEvent.objects.bulk_create(
        OutboxEvent(
            cqrs_id="book", instance_pk=str(n), signal_type="SAVE", revision=0,
            routing_key="book", body=f'"{char * ((size - 2) // width)}"', created_at=now,
        )
        for n, size in enumerate(sizes)
    )  # fmt: skip
    return [row.id for row in rows]


def ids(rows) -> list[int]:
    return [row[0] for row in rows]


def test_a_relay_batch_stops_before_the_row_that_would_pass_its_byte_budget():
    first, second, third, fourth = outbox_rows(400, 400, 400, 400)
    assert ids(unpublished_rows(500, max_bytes=1000)) == [first, second]
    assert ids(unpublished_rows(500, after=second, max_bytes=1000)) == [third, fourth]
    assert ids(unpublished_rows(3, max_bytes=10_000)) == [first, second, third]  # the count too
    assert ids(unpublished_rows(500, max_bytes=400)) == [first]


def test_bytes_are_bytes_not_characters():
    two_byte = outbox_rows(600, 600, char="é")  # 300 characters, 600 bytes each
    assert ids(unpublished_rows(500, max_bytes=1000)) == two_byte[:1]


def test_a_row_larger_than_the_budget_still_goes_alone():
    big, small = outbox_rows(5000, 10)
    assert ids(unpublished_rows(500, max_bytes=1000)) == [big]
    assert ids(unpublished_rows(500, after=big, max_bytes=1000)) == [small]


def test_the_default_budget_is_the_setting(settings):
    first, _ = outbox_rows(700, 700)
    settings.OUTBOX_BATCH_BYTES = 1000
    assert ids(unpublished_rows(500)) == [first]


def test_a_batch_of_large_rows_holds_the_budget_not_the_rows():
    """Measured: 200 pending rows of 200 KB (40 MB) with an 8 MiB budget; the read's peak
    allocation stays near the budget."""
    outbox_rows(*[200 * 1024] * 200)
    tracemalloc.start()
    try:
        rows = unpublished_rows(500, max_bytes=limits.OUTBOX_BATCH_BYTES)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    held = sum(len(row[2]) for row in rows)
    print(f"\n{len(rows)} rows, {held / 2**20:.1f} MiB of bodies, peak {peak / 2**20:.1f} MiB")
    assert len(rows) == limits.OUTBOX_BATCH_BYTES // (200 * 1024)
    assert peak < 3 * limits.OUTBOX_BATCH_BYTES


# --- the consumer ------------------------------------------------------------------------------


def test_a_body_over_the_maximum_is_refused_before_it_is_decoded(settings):
    settings.CQRS = {**settings.CQRS, "replica": {**settings.CQRS["replica"]}}
    settings.CQRS["replica"]["max_message_bytes"] = 1000
    body = orjson.dumps({"x": "y" * 2000})
    too_large = pytest.raises(messages.InvalidMessage, match="larger than CQRS_MAX_MESSAGE_BYTES")
    with mock.patch.object(messages.orjson, "loads") as loads, too_large:
        messages.decode(body)
    loads.assert_not_called()
    assert issubclass(messages.InvalidMessage, messages.PermanentFailure)


def test_the_default_maximum_fits_the_largest_event_the_master_can_send():
    """api_produtos's text fields at their maximum (sku 64, nome 200, descricao 10,000) in
    characters outside the BMP, as ujson's ensure_ascii escapes them (12 bytes each)."""
    escaped = "\\ud83d\\ude00"
    data = {"sku": escaped * 64, "nome": escaped * 200, "descricao": escaped * 10_000}
    assert len(orjson.dumps(data)) * 1.05 < limits.MAX_MESSAGE_BYTES


@pytest.mark.parametrize(
    ("prefetch", "batch", "budget", "largest", "expected"),
    [
        (500, 250, limits.PREFETCH_BYTES, limits.MAX_MESSAGE_BYTES, (500, 250)),  # defaults
        (500, 250, 128 * 2**20, 2**20, (128, 128)),  # 1 MiB messages: the count is cut
        (500, 250, 2**20, 4 * 2**20, (1, 1)),  # never below one
    ],
)
def test_the_prefetch_is_cut_to_the_byte_budget(prefetch, batch, budget, largest, expected):
    assert (
        limits.prefetch_within(prefetch, batch, prefetch_bytes=budget, max_message_bytes=largest)
        == expected
    )


def test_the_replica_transport_starts_its_consumer_within_the_budget(settings):
    from django_tools.replica import consumer as consumer_module
    from django_tools.replica.transport import ReliableRabbitMQTransport

    settings.CQRS = {**settings.CQRS, "replica": {**settings.CQRS["replica"]}}
    settings.CQRS["replica"].update(
        prefetch=500, batch_size=250, max_message_bytes=2**20, prefetch_bytes=64 * 2**20
    )
    with mock.patch.object(consumer_module, "Consumer") as consumer:
        # Not the main thread: no signal handlers installed in the test process.
        thread = threading.Thread(target=ReliableRabbitMQTransport.consume)
        thread.start()
        thread.join(10)
    kwargs = consumer.call_args.kwargs
    assert (kwargs["prefetch"], kwargs["batch_size"]) == (64, 64)


@pytest.mark.django_db(transaction=True)
def test_the_relay_sends_large_rows_in_batches_within_the_budget(
    settings, rabbitmq_url, cqrs_exchange, listening_queue
):
    from django_tools.outbox.relays.amqp import AmqpRelay
    from django_tools.testing import RunningRelay, wait_until

    queue = listening_queue.bind("book")
    settings.OUTBOX_BATCH_BYTES = 250 * 1024
    sent = outbox_rows(*[100 * 1024] * 10)
    relay = AmqpRelay(rabbitmq_url, cqrs_exchange)
    running = RunningRelay(relay)
    try:
        received = [int(queue.get()[0].message_id) for _ in sent]
        wait_until(lambda: relay.stats.published == len(sent), what="every row marked published")
    finally:
        running.stop()
    assert received == sent  # in id order
    assert relay.stats.batches >= 5  # two rows of 100 KB per 250 KB batch


def test_a_read_says_whether_it_took_every_unpublished_row_past_its_cursor():
    assert unpublished_rows(500).drained  # nothing pending
    first, second, third = outbox_rows(400, 400, 400)
    assert not unpublished_rows(2).drained  # its limit: there may be more
    assert not unpublished_rows(500, max_bytes=1000).drained  # the budget left the third out
    assert unpublished_rows(500, after=first).drained  # the other two, all there was
    assert ids(unpublished_rows(500, after=first)) == [second, third]
    assert not unpublished_rows(3).drained  # as many as its limit: it cannot tell
