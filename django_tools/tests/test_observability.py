"""Correlation ids, JSON logs and the /metrics view."""

import json
import logging

import pytest
from django.test import RequestFactory

from django_tools.observability import correlation
from django_tools.observability.logs import JsonFormatter


def test_a_sane_request_id_is_kept_and_anything_else_replaced():
    factory = RequestFactory()
    assert correlation.request_id_from(factory.get("/", HTTP_X_REQUEST_ID="abc-123")) == "abc-123"
    for bad in ("", "has space", "x" * 200, "semi;colon", "nul\x00"):
        generated = correlation.request_id_from(factory.get("/", HTTP_X_REQUEST_ID=bad))
        assert generated != bad and len(generated) == 32


def test_the_middleware_activates_and_answers_the_id():
    seen = []

    def view(request):
        from django.http import HttpResponse

        seen.append(correlation.current())
        return HttpResponse("ok")

    middleware = correlation.RequestIdMiddleware(view)
    response = middleware(RequestFactory().get("/", HTTP_X_REQUEST_ID="req-1"))
    assert seen == ["req-1"]
    assert response["X-Request-ID"] == "req-1"
    assert correlation.current() is None  # nothing leaks past the request
    assert correlation.cqrs_correlation_function("SAVE", "book", 1, None) is None


def test_log_records_carry_the_active_id_or_their_own():
    record = logging.makeLogRecord({"msg": "m"})
    token = correlation.activate("req-2")
    try:
        correlation.CorrelationFilter().filter(record)
    finally:
        correlation.deactivate(token)
    assert record.correlation_id == "req-2"
    explicit = logging.makeLogRecord({"msg": "m", "correlation_id": "from-message"})
    correlation.CorrelationFilter().filter(explicit)
    assert explicit.correlation_id == "from-message"


def test_json_lines():
    record = logging.makeLogRecord(
        {
            "msg": "applied %s",
            "args": ("x",),
            "levelname": "INFO",
            "name": "t",
            "correlation_id": "c1",
        }
    )
    line = JsonFormatter(service="svc").format(record)
    entry = json.loads(line)
    assert "\n" not in line
    assert (entry["message"], entry["service"], entry["correlation_id"], entry["level"]) == (
        "applied x",
        "svc",
        "c1",
        "INFO",
    )


@pytest.mark.django_db
def test_metrics_view_shows_counters_and_http_metrics(client):
    from django_tools.outbox.metrics import OUTBOX_WRITTEN
    from django_tools.replica import metrics as replica_metrics  # noqa: F401 - registers them

    OUTBOX_WRITTEN.labels("book", "SAVE").inc()
    client.get("/health")
    body = client.get("/metrics").content.decode()
    assert 'cqrs_outbox_events_written_total{cqrs_id="book",signal_type="SAVE"}' in body
    assert 'apis_http_requests_total{method="GET",route="health",status="' in body
    assert "cqrs_apply_batch_seconds_bucket" in body
