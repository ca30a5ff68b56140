import time

import pytest
from django.db import OperationalError

from django_tools import health

pytestmark = pytest.mark.django_db


def test_all_parts_up(client, rabbitmq_url, redis_url):
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["service"] == "tools-tests"
    assert set(body["checks"]) == {"database", "rabbitmq", "redis"}
    assert all(check["ok"] and check["ms"] >= 0 for check in body["checks"].values())


def test_broker_and_redis_down_is_degraded_and_every_failing_part_is_named(client, settings):
    settings.RABBITMQ_URL = "amqp://admin:admin@127.0.0.1:1/"
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["rabbitmq"]["ok"] is False and body["checks"]["redis"]["ok"] is False
    assert body["detail"].startswith("rabbitmq: ") and "; redis: " in body["detail"]


def database_down():
    raise OperationalError("connection to server at 10.0.0.1 failed: timeout expired")


def test_a_database_down_is_unavailable_and_named_first(client, settings, monkeypatch):
    monkeypatch.setitem(health.CHECKS, "database", database_down)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["detail"].startswith("database: connection to server")
    assert "; redis: " in body["detail"]


def test_live_checks_nothing(client, monkeypatch):
    monkeypatch.setitem(health.CHECKS, "database", database_down)
    response = client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "tools-tests"}


def test_ready_needs_the_database_only(client, settings):
    settings.RABBITMQ_URL = "amqp://admin:admin@127.0.0.1:1/"
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get("/health/ready")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok" and set(body["checks"]) == {"database"}


def test_ready_is_503_naming_the_database(client, monkeypatch):
    monkeypatch.setitem(health.CHECKS, "database", database_down)
    response = client.get("/health/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["detail"].startswith("database: connection to server")


def test_a_check_that_hangs_fails_by_the_deadline(client, monkeypatch):
    monkeypatch.setattr(health, "DEADLINE_SECONDS", 0.5)
    monkeypatch.setitem(health.CHECKS, "redis", lambda: time.sleep(5))
    started = time.monotonic()
    response = client.get("/health")
    assert time.monotonic() - started < 3
    body = response.json()
    assert response.status_code == 200 and body["status"] == "degraded"
    assert body["checks"]["redis"] == {"ok": False, "error": "no answer within 0.5s", "ms": 500.0}


@pytest.mark.parametrize("path", ["/health", "/health/live", "/health/ready"])
def test_only_get(client, path):
    assert client.post(path).status_code == 405


@pytest.mark.parametrize("password", ["se/cret", "se#cret", "se?cret"])
def test_a_password_the_url_parser_trips_on_never_shows(client, settings, password):
    settings.RABBITMQ_URL = f"amqp://admin:{password}@127.0.0.1:1/"
    body = client.get("/health").content.decode()
    assert password not in body and "se" + "cret" not in body
