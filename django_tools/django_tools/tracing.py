"""One trace from the REST call to the replica row, across the asynchronous hop.

```
request (Django)          the master ─┐
  cqrs.outbox.write       (the change's transaction: the row keeps this span's context)
  … waiting in the outbox …
  cqrs.publish            relay: until the broker confirmed; context → AMQP headers
  … waiting in the queue …
  cqrs.apply              the replica: the consumer's batch that applied it (one span a message)
```

The W3C trace context is stored on the outbox row (`OutboxEvent.trace_context`) and carried in
the message's AMQP headers (`traceparent`, `tracestate`: stock django-cqrs consumers ignore
them). In REPLICATION_MODE=celery the Celery instrumentation carries it in the task's headers.

Off unless settings.TRACING (an OTLP endpoint is set): `setup()` installs nothing, `enabled()` is
False and every call site skips its work, so the pipeline pays nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

_enabled = False
_provider = None  # this process's TracerProvider, once set up


def enabled() -> bool:
    return _enabled


def setup(service: str, exporter=None) -> None:
    """Trace this process (from the `django_tools` app's ready()). `exporter` replaces the OTLP
    one (tests use the SDK's in-memory exporter)."""
    global _enabled, _provider
    from django.conf import settings

    if _enabled or not (exporter is not None or getattr(settings, "TRACING", False)):
        return
    if _provider is not None:  # set up before, then disabled (tests): the same provider again
        _enabled = True
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME") or f"api_{service}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # Batched, off the request path; the processor survives gunicorn's fork.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    DjangoInstrumentor().instrument()
    CeleryInstrumentor().instrument()
    _enabled = True


def disable() -> None:
    """Stop tracing in this process (tests): call sites skip their work again."""
    global _enabled
    _enabled = False


def tracer() -> trace.Tracer:
    return trace.get_tracer("django_tools")


# --- the context across the hop -----------------------------------------------------------


def serialize(span_context: otel_context.Context | None = None) -> str:
    """The W3C headers of `span_context` (default: the current one), for an outbox row."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=span_context)
    return json.dumps(carrier, separators=(",", ":")) if carrier else ""


def deserialize(stored: str) -> otel_context.Context | None:
    if not stored:
        return None
    try:
        carrier = json.loads(stored)
    except ValueError:
        return None
    return propagate.extract(carrier) if isinstance(carrier, dict) else None


def inject_headers(headers: dict, span_context: otel_context.Context | None = None) -> dict:
    propagate.inject(headers, context=span_context)
    return headers


def extract_headers(headers: Mapping | None) -> otel_context.Context | None:
    """The trace context an AMQP message carries, None when it carries none."""
    if not headers or "traceparent" not in headers:
        return None
    carrier = {
        key: value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        for key, value in headers.items()
        if key in ("traceparent", "tracestate")
    }
    return propagate.extract(carrier)


@contextlib.contextmanager
def span(name: str, parent: otel_context.Context | None = None, **attributes) -> Iterator:
    """A span when tracing is on (as a child of `parent`, else of the current span); a no-op
    otherwise."""
    if not _enabled:
        yield None
        return
    with tracer().start_as_current_span(name, context=parent, attributes=attributes) as current:
        yield current


def now_ns() -> int:
    return time.time_ns()
