from django.db import OperationalError

from django_tools.chassis import health


def test_health_names_the_service_and_every_part(client, db, rabbitmq_url, redis_url):
    response = client.get("/health")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["service"] == "feed" and body["status"] == "ok"
    assert set(body["checks"]) == {"database", "rabbitmq", "redis", "consumer"}


def test_the_broker_gone_is_degraded(client, db, settings, redis_url):
    settings.RABBITMQ_URL = "amqp://admin:admin@127.0.0.1:1/"
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert "rabbitmq" in response.json()["detail"]


def test_redis_gone_is_degraded_and_the_feed_stays_ready(client, db, settings, rabbitmq_url):
    """The feed's cache falls back to the database: the feed serves without Redis."""
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["checks"]["redis"]["ok"] is False
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"


def test_without_its_database_the_feed_is_unavailable_and_not_ready(client, db, monkeypatch):
    def down():
        raise OperationalError("no such table: feed_produtomirror")

    monkeypatch.setitem(health.CHECKS, "database", down)
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["detail"].startswith("database:")
    assert client.get("/health/ready").status_code == 503
    assert client.get("/health/live").status_code == 200
