import pytest

pytestmark = pytest.mark.django_db


def test_all_parts_up(client, rabbitmq_url, redis_url):
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["service"] == "tools-tests"


def test_every_failing_part_is_named(client, settings):
    settings.RABBITMQ_URL = "amqp://admin:admin@127.0.0.1:1/"
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["ok"] is True
    assert body["detail"].startswith("rabbitmq: ") and "; redis: " in body["detail"]


def test_only_get(client):
    assert client.post("/health").status_code == 405


@pytest.mark.parametrize("password", ["se/cret", "se#cret", "se?cret"])
def test_a_password_the_url_parser_trips_on_never_shows(client, settings, password):
    settings.RABBITMQ_URL = f"amqp://admin:{password}@127.0.0.1:1/"
    body = client.get("/health").content.decode()
    assert password not in body and "se" + "cret" not in body
