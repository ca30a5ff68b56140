def test_health_names_the_service_and_every_part(client, db, rabbitmq_url, redis_url):
    response = client.get("/health")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["service"] == "feed"
    assert set(body["checks"]) == {"database", "rabbitmq", "redis"}


def test_health_is_503_when_the_broker_is_gone(client, db, settings):
    settings.RABBITMQ_URL = "amqp://admin:admin@127.0.0.1:1/"
    response = client.get("/health")
    assert response.status_code == 503
    assert "rabbitmq" in response.json()["detail"]
