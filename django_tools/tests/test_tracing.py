"""One trace from a write to the replica row, across the asynchronous hop, with the SDK's
in-memory exporter: master and replica share this process (dj_master / dj_replica), the broker
is the real one. And when tracing is off, nothing is added to the rows or the messages."""

from decimal import Decimal

import pytest
from dj_master.models import Book
from dj_replica.models import BookReplica
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_relay import RunningRelay

from django_tools import tracing
from django_tools.outbox.models import OutboxEvent
from django_tools.outbox.relays.amqp import AmqpRelay
from django_tools.testing import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


#: A process has one tracer provider: set up once, with this exporter.
SPANS = InMemorySpanExporter()


@pytest.fixture
def exporter():
    tracing.setup("tests", exporter=SPANS)
    SPANS.clear()
    yield SPANS
    tracing.disable()


def test_off_by_default_nothing_is_traced_or_carried(rabbitmq_url, cqrs_exchange, consumers):
    assert not tracing.enabled()
    Book.objects.create(isbn="OFF-1", title="t", price=Decimal("1"))
    assert OutboxEvent.objects.get().trace_context == ""


def test_a_write_yields_one_trace_from_the_request_to_the_replica_row(
    exporter, rabbitmq_url, cqrs_exchange, consumers
):
    consumers.start()
    relay = RunningRelay(AmqpRelay(rabbitmq_url, cqrs_exchange))
    try:
        # What the Django instrumentation does for a REST call: a server span around the write.
        with tracing.tracer().start_as_current_span("POST /api/books/", kind=trace.SpanKind.SERVER):
            book = Book.objects.create(isbn="TR-1", title="Traced", price=Decimal("3"))
        row = OutboxEvent.objects.get()
        assert '"traceparent"' in row.trace_context
        wait_until(lambda: BookReplica.objects.filter(pk=book.pk).exists(), what="the replica row")
        wait_until(
            lambda: any(s.name == "cqrs.apply" for s in exporter.get_finished_spans()),
            what="the apply span",
        )
    finally:
        relay.stop()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    request, write = spans["POST /api/books/"], spans["cqrs.outbox.write"]
    publish, applied = spans["cqrs.publish"], spans["cqrs.apply"]
    # One trace, each hop the child of the one before.
    assert len({s.context.trace_id for s in (request, write, publish, applied)}) == 1
    assert write.parent.span_id == request.context.span_id
    assert publish.parent.span_id == write.context.span_id
    assert applied.parent.span_id == publish.context.span_id
    assert publish.kind == trace.SpanKind.PRODUCER and applied.kind == trace.SpanKind.CONSUMER
    # In order, with the waits between them visible.
    assert request.start_time <= write.start_time <= publish.start_time <= applied.start_time
    assert applied.attributes["cqrs.outcome"] == "applied"
