"""Probes against the real RabbitMQ and Redis, and against ports where nothing listens."""

import time
from urllib.parse import urlsplit, urlunsplit

import pytest

from django_tools.connectivity import Unreachable, probe_rabbitmq, probe_redis


def test_reachable_services_pass(rabbitmq_url, redis_url):
    probe_rabbitmq(rabbitmq_url)
    probe_redis(redis_url)


def test_a_closed_port_fails_fast():
    started = time.monotonic()
    with pytest.raises(Unreachable, match="refused"):
        probe_rabbitmq("amqp://admin:admin@127.0.0.1:1/", timeout=2)
    with pytest.raises(Unreachable):
        probe_redis("redis://127.0.0.1:1/0", timeout=2)
    assert time.monotonic() - started < 4


def test_wrong_credentials_are_named(rabbitmq_url):
    parts = urlsplit(rabbitmq_url)
    wrong = urlunsplit(parts._replace(netloc=f"nobody:wrong@{parts.hostname}:{parts.port or 5672}"))
    with pytest.raises(Unreachable, match="authentication"):
        probe_rabbitmq(wrong)


def test_a_malformed_url_is_reported():
    with pytest.raises(Unreachable, match="invalid"):
        probe_redis("not-a-url")


def test_a_broker_that_never_answers_is_unreachable_within_the_timeout():
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel accepts; nobody speaks AMQP
    started = time.monotonic()
    with pytest.raises(Unreachable):
        probe_rabbitmq(f"amqp://admin:admin@127.0.0.1:{silent.getsockname()[1]}/", timeout=1)
    silent.close()
    assert time.monotonic() - started < 3
