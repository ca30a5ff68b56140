"""What api_produtos tells about itself: outbox status, metrics, the request id on its events."""

from datetime import timedelta

import orjson
import pytest
from django.utils import timezone

from django_tools.outbox.models import OutboxEvent

pytestmark = pytest.mark.django_db


def test_outbox_status_follows_the_backlog(api, produto_body, client):
    empty = client.get("/api/outbox/status").json()
    assert empty == {
        "backlog": 0,
        "oldest_created_at": None,
        "oldest_age_seconds": 0.0,
        "last_published_at": None,
        "stalled": False,
        "detail": None,
        "stall_after_seconds": 20.0,
    }
    for n in range(3):
        assert api.post("/api/produtos/", produto_body(sku=f"S-{n}")).status_code == 201
    status = client.get("/api/outbox/status").json()
    assert status["backlog"] == 3 and status["oldest_created_at"] is not None
    assert status["stalled"] is False  # young rows: the relay has time yet
    # Rows older than CQRS_STALL_AFTER and nothing ever published: the relay is stalled.
    OutboxEvent.objects.update(created_at=timezone.now() - timedelta(seconds=60))
    status = client.get("/api/outbox/status").json()
    assert status["stalled"] is True
    assert status["detail"].startswith("the outbox is stuck: 3 rows unpublished, the oldest 60s")
    published = timezone.now() - timedelta(seconds=5)
    OutboxEvent.objects.update(published_at=published)
    status = client.get("/api/outbox/status").json()
    assert status["backlog"] == 0
    assert status["last_published_at"].startswith(published.isoformat()[:19])


def test_the_request_id_travels_with_the_event(api, produto_body):
    response = api.client.post(
        "/api/produtos/", orjson.dumps(produto_body()), content_type="application/json",
        headers={"X-API-Key": api.key, "X-Request-ID": "req-outbox-1"},
    )  # fmt: skip
    assert response["X-Request-ID"] == "req-outbox-1"
    event = OutboxEvent.objects.get()
    assert event.correlation_id == "req-outbox-1"
    assert orjson.loads(event.body)["correlation_id"] == "req-outbox-1"


def test_every_response_has_a_request_id(client):
    assert len(client.get("/api/produtos/")["X-Request-ID"]) == 32


def test_metrics_count_outbox_writes_and_show_the_backlog(api, produto_body, client):
    prefix = 'cqrs_outbox_events_written_total{cqrs_id="produto",signal_type="SAVE"}'

    def written() -> float:
        body = client.get("/metrics").content.decode()
        lines = [line for line in body.splitlines() if line.startswith(prefix)]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

    before = written()
    api.post("/api/produtos/", produto_body(sku="M-1"))
    api.post("/api/produtos/", produto_body(sku="M-2"))
    assert written() == before + 2
    body = client.get("/metrics").content.decode()
    assert "cqrs_outbox_backlog 2.0" in body
    assert 'http_requests_total{method="POST",route="api/produtos/",status="201"}' in body


def test_made_up_http_methods_never_add_time_series(client):
    """gunicorn accepts any uppercase token as a method: with the method as a label, each one
    added series to /metrics for ever (4 MB after 3,000 requests)."""
    for n in range(50):
        client.generic(f"MADEUP{n}", "/api/produtos/")
    body = client.get("/metrics").content.decode()
    assert "MADEUP" not in body
    assert 'http_requests_total{method="other",route="api/produtos/",status="405"} 50.0' in body
