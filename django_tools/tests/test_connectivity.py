"""Probes against the real RabbitMQ and Redis, and against ports where nothing listens."""

import time
from urllib.parse import urlsplit, urlunsplit

import pytest

from django_tools.connectivity import Unreachable, probe_rabbitmq, probe_redis

# No database in it (probes of the broker and Redis): CI runs it on SQLite only.
pytestmark = pytest.mark.any_database


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


# --- the shared probes of requests ------------------------------------------------------------


def test_a_prober_runs_each_probe_once_however_many_ask():
    import threading

    from django_tools.connectivity import Prober

    prober, runs, release = Prober("test-once"), [], threading.Event()

    def probe() -> str:
        runs.append(1)
        release.wait(5)
        return "up"

    flights = [prober.submit("p", probe) for _ in range(20)]
    assert all(flight is flights[0] for flight in flights)
    release.set()
    assert prober.ask("p", probe, timeout=2) == "up"
    assert len(runs) == 1
    # A fresh answer is given again; an older one is asked anew.
    assert prober.ask("p", probe, timeout=2, fresh_for=10) == "up" and len(runs) == 1
    assert prober.ask("p", probe, timeout=2, fresh_for=0) == "up" and len(runs) == 2


def test_a_probe_that_hangs_is_waited_for_once_then_answered_busy_at_once():
    import threading

    from django_tools.connectivity import Busy, NoAnswer, Prober

    prober, release = Prober("test-hangs"), threading.Event()
    started = time.monotonic()
    with pytest.raises(NoAnswer, match=r"no answer within 0\.3s"):
        prober.ask("p", lambda: release.wait(10), timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 1
    started = time.monotonic()
    with pytest.raises(Busy, match=r"busy: the same probe has not answered for 0\.3"):
        prober.ask("p", lambda: None, timeout=0.3)
    assert time.monotonic() - started < 0.5
    # Another kind of probe of the same dependency waits behind it: bounded by its timeout.
    with pytest.raises(NoAnswer):
        prober.ask("q", lambda: "q", timeout=0.2)
    release.set()
    assert prober.ask("q", lambda: "q", timeout=2) == "q"


def test_a_failed_probe_says_why_to_whoever_asks():
    from django_tools.connectivity import Prober

    def refused() -> None:
        raise Unreachable("connection refused")

    with pytest.raises(Unreachable, match="connection refused"):
        Prober("test-fails").ask("p", refused, timeout=2)
