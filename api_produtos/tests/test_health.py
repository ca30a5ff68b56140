"""/health with the real database, RabbitMQ and Redis."""


def test_health_is_200_when_every_part_answers(client, db, rabbitmq_url, redis_url):
    response = client.get("/health")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok" and body["service"] == "produtos"
    assert all(check["ok"] for check in body["checks"].values())
    assert set(body["checks"]) == {"database", "rabbitmq", "redis"}


def test_health_is_503_naming_an_unreachable_broker(client, db, settings, redis_url):
    settings.RABBITMQ_URL = "amqp://admin:admin@127.0.0.1:1/"
    response = client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["rabbitmq"]["ok"] is False
    assert body["detail"].startswith("rabbitmq:")


def test_health_is_503_naming_an_unreachable_redis(client, db, settings, rabbitmq_url):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get("/health")
    assert response.status_code == 503
    assert "redis" in response.json()["detail"]
