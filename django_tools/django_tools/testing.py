"""pytest fixtures and helpers of every suite (loaded by `-p django_tools.testing` in each config;
pytest and pytest-django come with the `django-tools[testing]` extra).

Broker tests talk to the real RabbitMQ. When it is missing they fail, with the way to start
it, instead of skipping.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import orjson
import pika
import pytest

from django_tools.connectivity import Unreachable, amqp_channel, probe_rabbitmq, probe_redis
from django_tools.env import DEFAULT_RABBITMQ_URL, DEFAULT_REDIS_URL, redact_url
from django_tools.replica.policy import RetryPolicy

START_HINT = (
    "start the infrastructure with `docker compose up -d` (or the local services: "
    "`rabbitmq-server -detached`, `redis-server --daemonize yes`) and make sure the user exists: "
    "`rabbitmqctl add_user admin admin && rabbitmqctl set_user_tags admin administrator && "
    'rabbitmqctl set_permissions -p / admin ".*" ".*" ".*"`, or point RABBITMQ_URL elsewhere'
)

#: The keys of `TransportPayload.to_dict()` as stock django-cqrs 3.1 puts them on the wire: what
#: the outbox stores and the relay publishes must keep exactly these.
STOCK_PAYLOAD_KEYS = frozenset(
    {
        "signal_type",
        "cqrs_id",
        "instance_data",
        "previous_data",
        "instance_pk",
        "correlation_id",
        "retries",
        "expires",
        "meta",
    }
)


def pytest_configure(config: pytest.Config) -> None:
    # The members' suites load this plugin, not the root's pytest configuration: the marker CI
    # selects with (`-m "not any_database"` on its PostgreSQL pass) is registered here for them.
    config.addinivalue_line(
        "markers", "any_database: the same whatever DATABASE_URL says (CI: SQLite pass only)"
    )


def _setting(name: str, default: str) -> str:
    """A Django setting when Django is configured (a service's suite), else the environment
    (the root end-to-end suite, which configures no Django)."""
    from django.conf import settings

    if settings.configured and getattr(settings, name, None):
        return getattr(settings, name)
    return os.environ.get(name) or default


def broker_url() -> str:
    return _setting("RABBITMQ_URL", DEFAULT_RABBITMQ_URL)


def wait_until(
    condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.02, what: str = ""
):
    """Poll until `condition()` is truthy; returns its value, fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    url = broker_url()
    try:
        probe_rabbitmq(url, timeout=5)
    except Unreachable as exc:
        pytest.fail(f"RabbitMQ is not reachable at {redact_url(url)} ({exc}): {START_HINT}")
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = _setting("REDIS_URL", DEFAULT_REDIS_URL)
    try:
        probe_redis(url, timeout=5)
    except Unreachable as exc:
        pytest.fail(f"Redis is not reachable at {redact_url(url)} ({exc}): {START_HINT}")
    return url


@pytest.fixture(scope="session")
def cqrs_exchange(rabbitmq_url: str) -> Iterator[str]:
    """An exchange of this test session's own, so tests never deliver into a running lab's
    queues; the service's CQRS settings point at it for the whole session."""
    from django.conf import settings

    name = f"test_cqrs_{uuid.uuid4().hex[:10]}"
    previous = settings.CQRS["exchange"]
    settings.CQRS["exchange"] = name
    yield name
    settings.CQRS["exchange"] = previous
    with amqp_channel(rabbitmq_url) as channel:
        channel.exchange_delete(name)


@pytest.fixture
def listening_queue(rabbitmq_url: str, cqrs_exchange: str) -> Iterator[ListeningQueue]:
    """A temporary queue bound to the session's exchange, as a stock replica's would be."""
    queue = ListeningQueue(rabbitmq_url, cqrs_exchange)
    yield queue
    queue.close()


class ListeningQueue:
    def __init__(self, url: str, exchange: str) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        self.name = self.channel.queue_declare("", exclusive=True).method.queue
        self.exchange = exchange

    def bind(self, routing_key: str) -> ListeningQueue:
        self.channel.queue_bind(self.name, self.exchange, routing_key=routing_key)
        return self

    def get(self, timeout: float = 5.0) -> tuple[pika.BasicProperties, dict]:
        """The next message (properties, decoded JSON body); fails after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            method, properties, body = self.channel.basic_get(self.name, auto_ack=True)
            if method is not None:
                return properties, json.loads(body)
            if time.monotonic() > deadline:
                pytest.fail(f"no message arrived on {self.name} within {timeout}s")
            self.connection.sleep(0.01)

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


# --- a replica's reliable consumer against the real broker ---------------------------------
# For the suites with a replica model (django_tools' own, a replica service's): the consumer of
# django_tools.replica in threads, on a queue of the test's own bound to the session's exchange.

#: Short delays, so that a test sees several retries in a second or two.
FAST_POLICY = RetryPolicy(base=0.3, factor=2.0, cap=1.2, max_retries=3, jitter=0.2)


def replica_cqrs_id() -> str:
    """The CQRS_ID test messages go to unless told otherwise: the setting TEST_CQRS_ID, else the
    suite's only replica model's."""
    from dj_cqrs.registries import ReplicaRegistry
    from django.conf import settings

    chosen = getattr(settings, "TEST_CQRS_ID", None)
    if chosen:
        return chosen
    cqrs_ids = list(ReplicaRegistry.models)
    if len(cqrs_ids) != 1:
        raise LookupError(
            f"name the CQRS_ID (TEST_CQRS_ID): the replica models have {cqrs_ids or 'none'}"
        )
    return cqrs_ids[0]


def stock_payload(signal_type: str, data: dict, cqrs_id: str | None = None) -> dict:
    """A django-cqrs `TransportPayload.to_dict()`, as a stock master sends it."""
    from dj_cqrs.dataclasses import TransportPayload

    cqrs_id = cqrs_id or replica_cqrs_id()
    return TransportPayload(signal_type, cqrs_id, data, data.get("id")).to_dict()


def queue_depth(url: str, queue: str) -> int:
    with amqp_channel(url) as channel:
        return channel.queue_declare(queue, passive=True).method.message_count


class RunningConsumers:
    """Consumers in threads (each its own AMQP connection and database connection), as the
    workers of `cqrs_consume -w N` would run."""

    def __init__(self, topology, url: str) -> None:
        self.topology = topology
        self.url = url
        self.stop = threading.Event()
        self.consumers: list = []
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def start(self, workers: int = 1, **options) -> RunningConsumers:
        from django_tools import amqp_properties
        from django_tools.replica.consumer import Consumer

        amqp_properties.install()  # as each worker of `cqrs_consume` does when it starts
        for _ in range(workers):
            consumer = Consumer(self.topology, self.url, stop=self.stop, **options)
            thread = threading.Thread(target=self._run, args=(consumer,), daemon=True)
            self.consumers.append(consumer)
            self.threads.append(thread)
            thread.start()
        return self

    def _run(self, consumer) -> None:
        from django.db import connections

        try:
            consumer.run()
        except BaseException as exc:  # surfaced by stop_all()
            self.errors.append(exc)
        finally:
            connections.close_all()

    def stats(self, key: str) -> int:
        return sum(consumer.stats[key] for consumer in self.consumers)

    def stop_all(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)
        assert not any(t.is_alive() for t in self.threads), "a consumer did not stop"  # nosec B101 # a pytest helper
        assert not self.errors, self.errors  # nosec B101 # a pytest helper


@pytest.fixture
def topology(settings, rabbitmq_url, cqrs_exchange):
    """This test's own replica queue, retry queues and dead-letter queue, declared, with
    FAST_POLICY's retries."""
    from django_tools.replica.topology import Topology

    queue = f"test_replica_{uuid.uuid4().hex[:8]}"
    # A new dict, so that pytest-django's `settings` puts the old one back after the test.
    settings.CQRS = {
        **settings.CQRS,
        "queue": queue,
        "replica": {
            # Without a CQRS_RETRY_DELAY of the environment, which would replace the backoff.
            **{k: v for k, v in settings.CQRS["replica"].items() if k != "CQRS_RETRY_DELAY"},
            "retry_base": FAST_POLICY.base,
            "retry_factor": FAST_POLICY.factor,
            "retry_cap": FAST_POLICY.cap,
            "CQRS_MAX_RETRIES": FAST_POLICY.max_retries,
            "retry_jitter": FAST_POLICY.jitter,
            "dead_letter_queue": None,
        },
    }
    topology = Topology.from_settings()
    with amqp_channel(rabbitmq_url) as channel:
        topology.declare(channel)
    yield topology
    with amqp_channel(rabbitmq_url) as channel:
        for name in topology.queues():
            channel.queue_delete(name)


@pytest.fixture
def consumers(topology, rabbitmq_url) -> Iterator[RunningConsumers]:
    running = RunningConsumers(topology, rabbitmq_url)
    yield running
    running.stop_all()


@pytest.fixture
def publish(rabbitmq_url, cqrs_exchange):
    """Publish raw bodies to the session's exchange, as a master (or anything else) would; on
    the replica model's CQRS_ID unless another routing key is given."""
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    channel.confirm_delivery()

    def send(body, routing_key: str | None = None, headers: dict | None = None) -> None:
        if not isinstance(body, bytes):
            body = orjson.dumps(body)
        channel.basic_publish(
            cqrs_exchange,
            routing_key or replica_cqrs_id(),
            body,
            pika.BasicProperties(delivery_mode=2, headers=headers),
            mandatory=True,
        )

    yield send
    connection.close()


@pytest.fixture
def event_payload():
    """`stock_payload`: a message body as a stock django-cqrs master sends it."""
    return stock_payload


# --- faults on the broker's side -----------------------------------------------------------


def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    """Run `rabbitmqctl` (the command in RABBITMQCTL, e.g. `docker compose exec -T rabbitmq
    rabbitmqctl`, when the broker runs in a container); fails the test with its output."""
    command = [*shlex.split(os.environ.get("RABBITMQCTL") or "rabbitmqctl"), *args]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"`{shlex.join(command)}` failed ({exc}): fault tests need rabbitmqctl")
    if result.returncode != 0:
        pytest.fail(f"`{shlex.join(command)}` failed: {result.stdout}{result.stderr}")
    return result.stdout


class VirtualHost:
    """A RabbitMQ virtual host of one test's own: faults made on it (every connection closed
    by the broker) touch nothing else on the broker."""

    def __init__(self, base_url: str) -> None:
        from urllib.parse import quote, unquote, urlsplit, urlunsplit

        self.name = f"test_{uuid.uuid4().hex[:10]}"
        parts = urlsplit(base_url)
        self.user = unquote(parts.username or "guest")
        self.url = urlunsplit(parts._replace(path="/" + quote(self.name, safe="")))

    def create(self) -> VirtualHost:
        rabbitmqctl("add_vhost", self.name)
        rabbitmqctl("set_permissions", "-p", self.name, self.user, ".*", ".*", ".*")
        return self

    def close_connections(self, reason: str = "fault injected by a test") -> None:
        """Every client connection of the vhost closed by the broker, as on a node restart."""
        rabbitmqctl("close_all_connections", "--vhost", self.name, reason)

    def connection_count(self) -> int:
        """Client connections open on this vhost."""
        lines = rabbitmqctl("list_connections", "vhost", "--quiet", "--no-table-headers")
        return sum(line.strip() == self.name for line in lines.splitlines())

    def delete(self) -> None:
        rabbitmqctl("delete_vhost", self.name)


class SilentNode:
    """A black-holed RabbitMQ node: TCP connections are accepted (and counted), never answered
    — what a client sees of a node whose link drops everything."""

    def __init__(self) -> None:
        import socket

        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.accepted: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.accepted.append(self.listener.accept()[0])
            except OSError:
                return

    def url(self, user: str = "guest", password: str = "guest") -> str:  # nosec B107 # test broker
        return f"amqp://{user}:{password}@127.0.0.1:{self.port}/"

    def close(self) -> None:
        self.listener.close()
        for sock in self.accepted:
            sock.close()


@pytest.fixture
def silent_node() -> Iterator[SilentNode]:
    node = SilentNode()
    yield node
    node.close()


@pytest.fixture
def broker_vhost(rabbitmq_url: str) -> Iterator[VirtualHost]:
    vhost = VirtualHost(rabbitmq_url).create()
    yield vhost
    vhost.delete()


@pytest.fixture(autouse=True)
def _probes_closed():
    """The probes of `/health` and the status endpoints keep their connections (one per
    process): closed after each test that used them, before its database or broker goes."""
    yield
    import sys

    health = sys.modules.get("django_tools.chassis.health")
    if health is not None:
        health.close_probes()


@pytest.fixture
def direct_wsgi_calls():
    """Let a test call the WSGI application directly (schemathesis does) inside the test's
    database transaction: like Django's test client, stop requests from closing the
    connection that holds it."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@contextlib.contextmanager
def database_unreachable(alias: str = "default") -> Iterator[int]:
    """Within the block, database `alias` is a real PostgreSQL connection to a port on which
    nothing listens (connection refused, as when the server is down or restarting): what every
    request meets during a database outage. Yields the port; the real connection (and a test's
    transaction on it) is back afterwards. Needs database access (a `django_db` test, or
    `django_db_blocker.unblock()`)."""
    import socket

    from django.db import connections
    from django.db.backends.postgresql.base import DatabaseWrapper

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    original = connections[alias]
    down = DatabaseWrapper(
        {
            **original.settings_dict,
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "unreachable", "USER": "postgres", "PASSWORD": "",  # nosec B105 # nothing listens
            "HOST": "127.0.0.1", "PORT": str(port),
            "OPTIONS": {"connect_timeout": 2}, "CONN_MAX_AGE": 0,
        },
        alias=alias,
    )  # fmt: skip
    connections[alias] = down
    try:
        yield port
    finally:
        down.close()
        connections[alias] = original


def unbounded_inputs(openapi: dict) -> list[str]:
    """Where an OpenAPI schema accepts text without a maximum length: every string of every
    parameter and request body (references followed) needs `maxLength` or an `enum`."""
    components = openapi.get("components", {}).get("schemas", {})
    found: list[str] = []

    def walk(schema, where: str, seen: frozenset) -> None:
        if isinstance(schema, list):
            for n, item in enumerate(schema):
                walk(item, f"{where}[{n}]", seen)
            return
        if not isinstance(schema, dict):
            return
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            name = ref.rsplit("/", 1)[1]
            if name not in seen:
                walk(components.get(name, {}), f"{where}->{name}", seen | {name})
        if schema.get("type") == "string" and "maxLength" not in schema and "enum" not in schema:
            found.append(where)
        for key, value in schema.items():
            if isinstance(value, dict | list):
                walk(value, f"{where}/{key}", seen)

    for path, operations in openapi.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                walk(parameter.get("schema", {}), f"{method} {path} {parameter.get('name')}",
                     frozenset())  # fmt: skip
            for media, content in operation.get("requestBody", {}).get("content", {}).items():
                walk(content.get("schema", {}), f"{method} {path} body ({media})", frozenset())
    return found


class RunningRelay:
    """A relay (AMQP or Celery) running in a thread of the test process, its database
    connections closed when it ends; `stop()` asks it to stop and fails if it does not."""

    def __init__(self, relay) -> None:
        self.relay = relay
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from django.db import connections

        try:
            self.relay.run()
        finally:
            connections.close_all()

    def stop(self) -> None:
        self.relay.request_stop()
        self.thread.join(timeout=15)
        if self.thread.is_alive():
            pytest.fail("the relay did not stop")
