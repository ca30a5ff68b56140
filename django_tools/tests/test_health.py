import os
import time

import pytest
from django.db import OperationalError

from django_tools.chassis import health
from django_tools.testing import SilentNode

pytestmark = pytest.mark.django_db


def test_all_parts_up(client, rabbitmq_url, redis_url):
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["service"] == "tools-tests"
    # This suite's service has both apps: the progress of its relay and of its consumer too.
    assert set(body["checks"]) == {"database", "rabbitmq", "redis", "relay", "consumer"}
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
    monkeypatch.setitem(health.CHECKS, "hangs", lambda: time.sleep(5))
    started = time.monotonic()
    response = client.get("/health")
    assert time.monotonic() - started < 3
    body = response.json()
    assert response.status_code == 200 and body["status"] == "degraded"
    assert body["checks"]["hangs"] == {"ok": False, "error": "no answer within 0.5s", "ms": 500.0}
    # Asked again while it still hangs: answered at once ("busy", not waited for), and it is
    # not run a second time.
    body = client.get("/health").json()
    assert body["checks"]["hangs"]["error"].startswith("busy: the same probe has not answered")


@pytest.mark.parametrize("path", ["/health", "/health/live", "/health/ready"])
def test_only_get(client, path):
    assert client.post(path).status_code == 405


@pytest.mark.parametrize("password", ["se/cret", "se#cret", "se?cret"])
def test_a_password_the_url_parser_trips_on_never_shows(client, settings, password):
    settings.RABBITMQ_URL = f"amqp://admin:{password}@127.0.0.1:1/"
    body = client.get("/health").content.decode()
    assert password not in body and "se" + "cret" not in body


# --- probes: no connection per request, nothing piled up, black-holed nodes skipped in time ---


@pytest.fixture
def second_silent_node():
    node = SilentNode()
    yield node
    node.close()


def test_black_holed_first_nodes_leave_time_for_a_working_one(
    client, settings, rabbitmq_url, redis_url, silent_node, second_silent_node
):
    """The probe's budget is shared by the nodes of RABBITMQ_URL: with the first two
    black-holed, the third still answers within the request's deadline (each node used to get
    2 s of a 3 s deadline: the cluster was called down)."""
    settings.RABBITMQ_URL = f"{silent_node.url()},{second_silent_node.url()},{rabbitmq_url}"
    started = time.monotonic()
    body = client.get("/health").json()
    elapsed = time.monotonic() - started
    assert body["checks"]["rabbitmq"]["ok"] is True, body
    assert elapsed < health.DEADLINE_SECONDS
    assert silent_node.accepted and second_silent_node.accepted  # both were tried first
    # The link stays on the node that answered: the next asks wait for no black hole.
    time.sleep(1.1)  # past the one-second reuse of an answer
    started = time.monotonic()
    assert client.get("/health").json()["checks"]["rabbitmq"]["ok"] is True
    assert time.monotonic() - started < 0.5
    assert len(silent_node.accepted) == 1 and len(second_silent_node.accepted) == 1


def test_many_requests_while_the_broker_is_black_holed_cost_one_probe(
    settings, rabbitmq_url, redis_url, silent_node
):
    """Anyone may call /health as often as they like: with the broker black-holed, 40 requests
    at once are all answered by the deadline, and they cost one connection attempt, not 40
    (each request used to open its own, and the status page queued them without bound)."""
    import threading

    from django.test import Client

    settings.RABBITMQ_URL = silent_node.url()
    answers: list[tuple[float, dict]] = []

    def call() -> None:
        began = time.monotonic()
        body = Client().get("/health").json()
        answers.append((time.monotonic() - began, body))

    threads = [threading.Thread(target=call) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(answers) == 40
    assert max(took for took, _ in answers) < health.DEADLINE_SECONDS + 1
    assert all(body["checks"]["rabbitmq"]["ok"] is False for _, body in answers)
    assert all(body["checks"]["database"]["ok"] for _, body in answers)
    assert len(silent_node.accepted) == 1


def probe_connections(service: str = "tools-tests") -> int:
    """Connections the broker has from this process's probes (their connection name)."""
    from django_tools.testing import rabbitmqctl

    listing = rabbitmqctl("list_connections", "client_properties", "--quiet", "--no-table-headers")
    return listing.count(f"probe {service} pid {os.getpid()}")


@pytest.mark.django_db(transaction=True)
def test_health_and_status_share_one_kept_connection(client, settings, rabbitmq_url, topology):
    settings.RABBITMQ_URL = rabbitmq_url
    settings.CQRS = {**settings.CQRS, "url": rabbitmq_url}
    for _ in range(5):
        assert client.get("/health").json()["checks"]["rabbitmq"]["ok"] is True
        assert client.get("/api/replication/status").json()["broker"]["reachable"] is True
        time.sleep(0.3)
    assert probe_connections() == 1
