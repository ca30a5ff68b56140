"""`apis up`'s decision about RabbitMQ and Redis: use what answers, start a private server
where a loopback URL finds nothing, and otherwise one line saying what to do."""

import pytest

from apis.infra import (
    BINARY,
    COMPOSE,
    RABBITMQ,
    REDIS,
    USE,
    InfraProblem,
    Infrastructure,
    decide,
    endpoint,
)

# `apis up`'s reading of the broker's and Redis's URLs: no database in it.
pytestmark = pytest.mark.any_database

REFUSED = "connection refused"


def test_urls_are_read_as_their_client_libraries_read_them():
    rabbit = endpoint(RABBITMQ, "amqp://ops:p%40ss@127.0.0.1:5673/lab")
    assert (rabbit.host, rabbit.port, rabbit.user, rabbit.password, rabbit.vhost) == (
        "127.0.0.1", 5673, "ops", "p@ss", "lab",
    )  # fmt: skip
    assert endpoint(RABBITMQ, "amqp://admin:admin@localhost:5672/").on_loopback
    assert endpoint(RABBITMQ, "amqp://a:b@127.0.0.1:5672/,amqp://a:b@127.0.0.1:5673/").several
    redis = endpoint(REDIS, "redis://:s3cret@127.0.0.1:6380/2")
    assert (redis.host, redis.port, redis.password) == ("127.0.0.1", 6380, "s3cret")
    assert not endpoint(REDIS, "redis://cache.internal:6379/0").on_loopback


def test_a_url_its_library_cannot_read_is_one_line_without_its_password():
    with pytest.raises(InfraProblem) as caught:
        endpoint(RABBITMQ, "amqp://admin:a#Sup3rS3cret@127.0.0.1:5673/")
    assert "RABBITMQ_URL=" in str(caught.value) and "Sup3rS3cret" not in str(caught.value)


@pytest.mark.parametrize("label", [RABBITMQ, REDIS])
def test_what_answers_is_used_and_a_silent_loopback_port_gets_a_private_server(label):
    url = "amqp://admin:admin@127.0.0.1:5673/" if label == RABBITMQ else "redis://localhost:6380/0"
    point = endpoint(label, url)
    assert decide(point, None, listens=True, no_infra=False, docker=False) == USE
    assert decide(point, REFUSED, listens=False, no_infra=False, docker=False) == BINARY
    # compose publishes fixed ports: on others, the installed binaries even where Docker runs.
    assert decide(point, REFUSED, listens=False, no_infra=False, docker=True) == BINARY


@pytest.mark.parametrize(
    "label,url",
    [(RABBITMQ, "amqp://admin:admin@localhost:5672/"), (REDIS, "redis://127.0.0.1:6379/0")],
)
def test_with_docker_the_default_ports_come_from_compose(label, url):
    point = endpoint(label, url)
    assert decide(point, REFUSED, listens=False, no_infra=False, docker=True) == COMPOSE
    assert decide(point, REFUSED, listens=False, no_infra=False, docker=False) == BINARY


@pytest.mark.parametrize(
    "url,listens,said",
    [
        # Something of the machine's own listens there (wrong user?): never started over.
        ("amqp://admin:admin@127.0.0.1:5672/", True, "rabbitmqctl add_user admin"),
        ("amqp://admin:admin@mq.internal:5672/", False, "not on this machine"),
        ("amqp://a:b@127.0.0.1:5673/,amqp://a:b@127.0.0.1:5674/", False, "several nodes"),
        ("amqp://admin:admin@127.0.0.1:1/", False, "above 1023"),
    ],
)
def test_what_apis_up_does_not_start_is_one_line_saying_why(url, listens, said):
    with pytest.raises(InfraProblem, match=said) as caught:
        decide(endpoint(RABBITMQ, url), REFUSED, listens=listens, no_infra=False, docker=False)
    assert "\n" not in str(caught.value) and "admin:admin" not in str(caught.value)


def test_no_infra_names_the_url_and_both_ways_to_start_it():
    point = endpoint(REDIS, "redis://:s3cret@127.0.0.1:6380/0")
    with pytest.raises(InfraProblem) as caught:
        decide(point, REFUSED, listens=False, no_infra=True, docker=False)
    line = str(caught.value)
    assert "Redis is not reachable at redis://:***@127.0.0.1:6380/0" in line
    assert "docker compose up -d" in line and "apt-get install" in line and "--no-infra" in line
    assert "s3cret" not in line and "\n" not in line


def test_a_server_that_is_not_installed_is_one_line_saying_what_to_install(monkeypatch, tmp_path):
    import apis.infra

    monkeypatch.setattr(apis.infra.shutil, "which", lambda name: None)
    said = []
    infra = Infrastructure(root=tmp_path, say=said.append)
    with pytest.raises(InfraProblem, match="`redis-server` is not installed: apt-get install"):
        infra._start(endpoint(REDIS, "redis://127.0.0.1:6380/0"))
    assert not said and not infra.started  # nothing announced, nothing to stop
