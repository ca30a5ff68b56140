"""Bounded-time probes of the infrastructure: used by `/health`, the status endpoints and by
`apis up` before it starts.

Each probe raises `Unreachable` with a short human reason; none of them can hang longer than
its timeout, so a dead or black-holed broker never blocks a request.

What requests ask (`/health`, `/api/replication/status`) goes through a `Prober` per dependency
and process: one thread runs its probes one at a time on one connection it keeps (the broker's:
`BrokerLink`; Redis: one client; the database: that thread's Django connection), a probe asked
for again while it runs is not run twice, and an answer less than a second old is given again.
Anyone can call the endpoints as often as they like: no request opens a connection, and the
work waiting is at most one probe of each kind.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pika
import redis
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.adapters.utils.connection_workflow import AMQPConnectorException
from pika.exceptions import AMQPError

from django_tools.broker import (
    blocking_connection,
    connect_timeout_seconds,
    connection_parameters,
    node_of,
    set_deadline,
)
from django_tools.env import redact_url, scrub

logger = logging.getLogger("django_tools.connectivity")


class Unreachable(Exception):
    """The service did not answer within the timeout, or refused us.

    Its reason is shown on `/health`, in log lines and by `apis up`: whatever a raise site
    puts in it, it is scrubbed here too (what a URL parser quoted, the URLs and secrets of the
    environment), so that a new probe cannot bring a password back."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(scrub(reason))


def probe_rabbitmq(url: str, timeout: float = 2.0) -> None:
    """Open and close one AMQP connection (which also checks the credentials and vhost). With
    several nodes (comma-separated), the first that answers will do; each is given `timeout`."""
    reasons = []
    for node in url.split(","):
        node = node.strip()
        try:
            _probe_node(node, timeout)
            return
        except Unreachable as exc:
            reasons.append(str(exc) if "," not in url else f"{_host(node)}: {exc}")
    # A URL a parser cannot read comes back quoted in its error: scrubbed, as every reason.
    raise Unreachable(scrub("; ".join(reasons), [url]) or "no RabbitMQ URL given")


def _probe_node(url: str, timeout: float) -> None:
    try:
        # The parameters every broker connection gets (django_tools.broker), bounded by
        # `timeout`: one attempt, connect and handshake within it.
        (params,) = connection_parameters(
            url, connect_timeout=timeout, blocked_connection_timeout=timeout
        )
    except Exception as exc:  # pika raises several types for a malformed URL
        raise Unreachable(f"invalid RABBITMQ_URL {redact_url(url)}: {exc}") from exc
    try:
        connection = pika.BlockingConnection(params)
    except AMQPError as exc:
        raise Unreachable(_amqp_reason(exc)) from exc
    except AMQPConnectorException as exc:  # e.g. a handshake that never completes
        raise Unreachable(str(exc) or type(exc).__name__) from exc
    except OSError as exc:
        raise Unreachable(str(exc) or exc.__class__.__name__) from exc
    with contextlib.suppress(AMQPError):
        connection.close()


def _host(url: str) -> str:
    """`host:port` of a node URL, for messages (never the credentials)."""
    return redact_url(url).split("@")[-1].split("/")[0]


def probe_redis(url: str, timeout: float = 2.0) -> None:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    except ValueError as exc:
        raise Unreachable(scrub(f"invalid REDIS_URL {redact_url(url)}: {exc}", [url])) from exc
    try:
        client.ping()
    except redis.RedisError as exc:
        raise Unreachable(scrub(str(exc) or exc.__class__.__name__, [url])) from exc
    finally:
        client.close()


@contextmanager
def amqp_channel(url: str) -> Iterator[BlockingChannel]:
    """A short-lived channel on the first node of `url` that answers (commands, tests)."""
    connection = blocking_connection(url)
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()


def _amqp_reason(exc: AMQPError) -> str:
    if isinstance(exc, pika.exceptions.ProbableAuthenticationError):
        return "authentication refused (wrong user or password)"
    if isinstance(exc, pika.exceptions.ProbableAccessDeniedError):
        return "access refused (vhost or permissions)"
    text = str(exc) or repr(exc)
    if "refused" in text.lower():
        return "connection refused"
    return text


# --- shared probes for requests --------------------------------------------------------------


class NoAnswer(Unreachable):
    """The probe did not answer within the caller's timeout (it may still, for the next one)."""


class Busy(NoAnswer):
    """The same probe, asked for earlier, has not answered yet for longer than the timeout."""


@dataclass
class _Flight:
    future: concurrent.futures.Future
    started: float  # monotonic
    finished: float | None = None


class Prober:
    """One thread, per process, for the probes of one dependency.

    - `submit(key, job)` never blocks: the answer of probe `key` if it finished less than
      `fresh_for` seconds ago; else the one running (or waiting to run) if there is one; else
      `job` queued for the thread. Each key is queued or running at most once, so the queue
      never holds more than one probe per key, however many requests ask.
    - `ask(key, job, timeout)` waits for it up to `timeout`; a probe that has already run longer
      than `timeout` is answered at once with `Busy` (nobody else waits on it).
    - `idle()` (optional) runs about every `idle_every` seconds while nothing is asked: the
      broker's link services its heartbeats there.

    gunicorn `--preload` imports the app before forking its workers: each process gets its own
    thread and state on first use."""

    def __init__(
        self, name: str, idle: Callable[[], None] | None = None, idle_every: float = 1.0
    ) -> None:
        self.name = name
        self.idle = idle
        self.idle_every = idle_every
        self._pid: int | None = None
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget)

    @property
    def started(self) -> bool:
        """Whether this process has a thread for this prober."""
        return self._pid == os.getpid()

    def _forget(self) -> None:
        self._pid = None
        self._lock = threading.Lock()

    def _start(self) -> None:
        # Under self._lock.
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._flights: dict[str, _Flight] = {}  # queued or running
        self._answers: dict[str, _Flight] = {}  # the last finished, per key
        threading.Thread(target=self._run, name=f"probe-{self.name}", daemon=True).start()

    def submit(self, key: str, job: Callable[[], Any], fresh_for: float = 1.0) -> _Flight:
        now = time.monotonic()
        with self._lock:
            self._start()
            answer = self._answers.get(key)
            if answer is not None and now - answer.finished < fresh_for:
                return answer
            flight = self._flights.get(key)
            if flight is None:
                flight = _Flight(concurrent.futures.Future(), now)
                self._flights[key] = flight
                self._jobs.put((key, job, flight))
            return flight

    def ask(self, key: str, job: Callable[[], Any], timeout: float, fresh_for: float = 1.0):
        flight = self.submit(key, job, fresh_for)
        return wait_for(flight, timeout)

    def _run(self) -> None:
        while True:
            try:
                key, job, flight = self._jobs.get(timeout=self.idle_every)
            except queue.Empty:
                if self.idle is not None:
                    try:
                        self.idle()
                    except Exception:  # the next probe finds out what is wrong
                        logger.debug("idle work of the %s prober failed", self.name, exc_info=True)
                continue
            flight.future.set_running_or_notify_cancel()
            try:
                result = job()
            except BaseException as exc:  # the answer of the probe, for whoever waits on it
                flight.future.set_exception(exc)
            else:
                flight.future.set_result(result)
            with self._lock:
                flight.finished = time.monotonic()
                self._answers[key] = flight
                if self._flights.get(key) is flight:
                    del self._flights[key]


def wait_for(flight: _Flight, timeout: float):
    """The result of a submitted probe, waited for up to `timeout` (see `Prober`)."""
    late = time.monotonic() - flight.started - timeout
    if flight.finished is None and late > 0:
        raise Busy(f"busy: the same probe has not answered for {timeout + late:.1f}s")
    try:
        return flight.future.result(timeout=max(0.0, timeout))
    except concurrent.futures.TimeoutError:
        raise NoAnswer(f"no answer within {timeout:g}s") from None


class BrokerLink:
    """The probes' one connection to the broker (one per process), used from its Prober's
    thread only. It connects on first use, node by node with a share of the probe's budget
    each (so a black-holed first node of a cluster leaves time for the next), starting at the
    node that answered last; keeps the connection, serviced between probes (`idle`); and gives
    it up when a probe fails on it, or when the URL changes."""

    def __init__(self) -> None:
        self.url: str | None = None
        self.connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._node = 0

    def run(self, url: str, work: Callable[[BrokerLink], Any], budget: float):
        """`work(self)` on an open connection, all of it (connecting included) within about
        `budget` seconds (the connection's deadline is checked every second)."""
        started = time.monotonic()
        try:
            if url != self.url or self.connection is None or not self.connection.is_open:
                self.drop()
                self._connect(url, budget)
            set_deadline(self.connection, max(0.1, budget - (time.monotonic() - started)))
            result = work(self)
            set_deadline(self.connection, None)
            return result
        except AMQPError as exc:
            self.drop()
            raise Unreachable(_amqp_reason(exc)) from exc
        except AMQPConnectorException as exc:
            self.drop()
            raise Unreachable(str(exc) or type(exc).__name__) from exc
        except OSError as exc:
            self.drop()
            raise Unreachable(str(exc) or type(exc).__name__) from exc
        except Exception:
            self.drop()
            raise

    def _connect(self, url: str, budget: float) -> None:
        try:
            nodes = connection_parameters(url)  # a malformed URL: say so, not a traceback
        except Exception as exc:  # pika raises several types for a malformed URL
            raise Unreachable(f"invalid RABBITMQ_URL {redact_url(url)}: {exc}") from exc
        per_node = max(0.2, min(connect_timeout_seconds(), budget / len(nodes)))
        self.url = url
        self.connection = blocking_connection(
            url,
            first=self._node,
            connect_timeout=per_node,
            blocked_connection_timeout=budget,
            name=f"probe {_service_name()}",
        )
        self._node = node_of(self.connection, url)

    def channel(self) -> BlockingChannel:
        """The link's channel (a new one after the broker closed the last, e.g. on a 404)."""
        if self._channel is None or not self._channel.is_open:
            self._channel = self.connection.channel()
        return self._channel

    def idle(self) -> None:
        if self.connection is not None and self.connection.is_open:
            try:
                self.connection.process_data_events(0)
            except Exception:
                self.drop()
                raise

    def forget(self) -> None:
        """In a forked child: the connection is the parent's (its socket too); let it be."""
        self.connection, self._channel, self.url = None, None, None

    def drop(self) -> None:
        connection, self.connection, self._channel = self.connection, None, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(Exception):
                set_deadline(connection, 1.0)  # a dead link never completes the close
                connection.close()


def _service_name() -> str:
    from django.conf import settings

    return getattr(settings, "SERVICE_NAME", "django")


def ping(link: BrokerLink) -> None:
    """One round trip on the link (`basic.qos` changes nothing on a channel that never
    consumes): the broker is there and answering, not only the socket open."""
    link.channel().basic_qos(prefetch_count=0)


_broker_link = BrokerLink()
os.register_at_fork(after_in_child=_broker_link.forget)
#: The probers of this process, one per dependency (`replica`: the consumer's progress, which
#: waits on the broker's prober and then reads the database).
BROKER = Prober("rabbitmq", idle=_broker_link.idle)
REDIS = Prober("redis")
DATABASE = Prober("database")
REPLICA = Prober("replica")


def on_broker(url: str, work: Callable[[BrokerLink], Any], budget: float):
    """Run `work(link)` on this process's probe link to the broker (in BROKER's thread)."""
    return _broker_link.run(url, work, budget)


_redis_clients: dict[str, redis.Redis] = {}


def redis_client(url: str, timeout: float) -> redis.Redis:
    """This process's Redis client for probes (its pool keeps the connection)."""
    client = _redis_clients.get(url)
    if client is None:
        try:
            client = redis.Redis.from_url(
                url, socket_connect_timeout=timeout, socket_timeout=timeout
            )
        except ValueError as exc:
            raise Unreachable(f"invalid REDIS_URL {redact_url(url)}: {exc}") from exc
        _redis_clients.clear()  # another URL (tests change settings): the old one goes
        _redis_clients[url] = client
    return client


def ping_redis(url: str, timeout: float) -> None:
    try:
        redis_client(url, timeout).ping()
    except redis.RedisError as exc:
        raise Unreachable(str(exc) or exc.__class__.__name__) from exc


def close_shared() -> None:
    """Give up the probes' connections (tests, before their databases and brokers go)."""
    _broker_link.drop()
    for client in _redis_clients.values():
        with contextlib.suppress(Exception):
            client.close()
    _redis_clients.clear()
