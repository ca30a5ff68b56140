"""/health, /health/live and /health/ready with the real database, RabbitMQ and Redis."""

from django.db import OperationalError

from django_tools.chassis import health


def test_health_is_200_when_every_part_answers(client, db, rabbitmq_url, redis_url):
    response = client.get("/health")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok" and body["service"] == "produtos"
    assert all(check["ok"] for check in body["checks"].values())
    assert set(body["checks"]) == {"database", "rabbitmq", "redis", "relay"}


def test_an_unreachable_broker_is_degraded_not_unavailable(client, db, settings, redis_url):
    """Writes go to the outbox: the master serves without the broker."""
    settings.RABBITMQ_URL = "amqp://admin:admin@127.0.0.1:1/"
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["rabbitmq"]["ok"] is False
    assert body["detail"].startswith("rabbitmq:")
    assert client.get("/health/ready").status_code == 200


def test_an_unreachable_redis_is_degraded(client, db, settings, rabbitmq_url):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert "redis" in response.json()["detail"]


def test_without_its_database_the_master_is_unavailable_and_not_ready(client, db, monkeypatch):
    def down():
        raise OperationalError("database is locked")

    monkeypatch.setitem(health.CHECKS, "database", down)
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert response.json()["detail"].startswith("database: database is locked")
    ready = client.get("/health/ready")
    assert ready.status_code == 503 and ready.json()["detail"].startswith("database:")
    assert client.get("/health/live").json() == {"status": "ok", "service": "produtos"}


def test_ready_with_everything_but_the_database_down(client, db, settings):
    settings.RABBITMQ_URL = "amqp://admin:admin@127.0.0.1:1/"
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get("/health/ready")
    assert response.status_code == 200, response.content
    assert response.json()["checks"]["database"]["ok"] is True
