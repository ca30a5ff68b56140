"""What api_produtos tells about itself: outbox status, metrics, the request id on its events."""

import json
import time
from datetime import timedelta

import orjson
import pytest
from django.utils import timezone

from django_tools.heartbeat import RELAY_FILE, Heartbeat
from django_tools.observability.metrics import exported_metric_names
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
    assert 'apis_http_requests_total{method="POST",route="api/produtos/",status="201"}' in body
    # The first release's name, deprecated, still counts for one release.
    assert '\nhttp_requests_total{method="POST",route="api/produtos/",status="201"}' in body


def test_made_up_http_methods_never_add_time_series(client):
    """gunicorn accepts any uppercase token as a method: with the method as a label, each one
    added series to /metrics for ever (4 MB after 3,000 requests)."""
    for n in range(50):
        client.generic(f"MADEUP{n}", "/api/produtos/")
    body = client.get("/metrics").content.decode()
    assert "MADEUP" not in body
    other = 'apis_http_requests_total{method="other",route="api/produtos/",status="405"}'
    assert f"{other} 50.0" in body


def samples(client) -> dict[str, float]:
    body = client.get("/metrics").content.decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line and not line.startswith("#")
    }


def test_metrics_show_the_relays_heartbeat(client, settings, tmp_path):
    """The relay's heartbeat file, as `outbox_relay_health` reads it, at every scrape: what the
    alerts RelayDown and BrokerBlockingPublishes (monitoring/prometheus/alerts.yml) watch."""
    settings.HEARTBEAT_DIR = str(tmp_path)
    none = samples(client)
    assert none["cqrs_relay_up"] == 0 and none["cqrs_relay_blocked"] == 0
    assert "cqrs_relay_heartbeat_age_seconds" not in none

    beat = Heartbeat(tmp_path / RELAY_FILE)  # this process, alive
    beat.beat("publishing")
    publishing = samples(client)
    assert publishing["cqrs_relay_up"] == 1 and publishing["cqrs_relay_blocked"] == 0
    assert 0 <= publishing["cqrs_relay_heartbeat_age_seconds"] < 5
    # What the scrape shows is what the collectors describe (monitoring/ is checked against it).
    assert {name.split("{")[0] for name in publishing} <= exported_metric_names()
    beat.beat("blocked")
    assert samples(client)["cqrs_relay_blocked"] == 1

    pulse = json.loads((tmp_path / RELAY_FILE).read_text())
    (tmp_path / RELAY_FILE).write_text(json.dumps({**pulse, "time": time.time() - 60}))
    stale = samples(client)
    assert stale["cqrs_relay_up"] == 0 and stale["cqrs_relay_blocked"] == 0
    assert stale["cqrs_relay_heartbeat_age_seconds"] >= 60
