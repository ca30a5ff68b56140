"""Connections to RabbitMQ: one node, or several for failover; and how a dead link is noticed.

`RABBITMQ_URL` takes one AMQP URL or several separated by commas (the nodes of a cluster). Every
connection tries them in order and takes the first that answers; a long-lived session (relay,
consumer) that loses its node connects again the same way and so moves on to a node that is up.
A node that refuses at once costs nothing; a node that does not answer (black-holed) costs
`CQRS_AMQP_CONNECT_TIMEOUT`, for the TCP connect and for the whole AMQP handshake.

A link can also die silently: a NAT or load balancer forgets the flow, a VM is paused, a cable
is pulled — no FIN, no RST, the socket stays open and nothing arrives. Three things notice:

- the AMQP heartbeat (`CQRS_AMQP_HEARTBEAT`, a few seconds): the broker sends at least every
  half of it. pika's own checker only looks every `heartbeat + 5` s and needs a whole such
  window without a byte (up to ~2 × (heartbeat + 5) s). `WatchedConnection` looks every second
  and gives the link up once nothing at all arrived for 2 × heartbeat;
- TCP (`tcp_options`): `TCP_USER_TIMEOUT` ends a connection whose sent bytes go unacknowledged
  (a dead path on a real network) and keepalive probes an idle one — the kernel's view, which a
  paused broker process still answers, hence the heartbeat above;
- deadlines of the work itself (the relay's publisher confirms, a probe's budget).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator

import pika
from django.conf import settings
from pika.adapters.blocking_connection import BlockingConnection
from pika.adapters.select_connection import SelectConnection
from pika.exceptions import AMQPConnectionError, AMQPHeartbeatTimeout

logger = logging.getLogger("django_tools.broker")

#: Defaults when Django's settings do not say (`CQRS_AMQP_HEARTBEAT`,
#: `CQRS_AMQP_CONNECT_TIMEOUT`).
DEFAULT_HEARTBEAT = 4
DEFAULT_CONNECT_TIMEOUT = 3.0
#: How often a `WatchedConnection` looks at its link.
TICK = 1.0


def heartbeat_seconds() -> int:
    """CQRS_AMQP_HEARTBEAT (the default outside Django: the lab's tools, `apis up`)."""
    if not settings.configured:
        return DEFAULT_HEARTBEAT
    return int(getattr(settings, "CQRS_AMQP_HEARTBEAT", DEFAULT_HEARTBEAT))


def connect_timeout_seconds() -> float:
    """CQRS_AMQP_CONNECT_TIMEOUT (the default outside Django)."""
    if not settings.configured:
        return DEFAULT_CONNECT_TIMEOUT
    return float(getattr(settings, "CQRS_AMQP_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT))


def dead_after(heartbeat: float) -> float:
    """Seconds without a byte from the broker after which a link is dead: the broker sends
    something at least every `heartbeat / 2` s, so this is four of its beats missed."""
    return 2.0 * heartbeat


def broker_urls(value: str | None = None) -> list[str]:
    """The node URLs of `value` (default: django-cqrs's `CQRS["url"]`), in order."""
    if value is None:
        value = settings.CQRS["url"]
    urls = [part.strip() for part in value.split(",") if part.strip()]
    if not urls:
        raise ValueError("no RabbitMQ URL given")
    return urls


def tcp_options(heartbeat: int) -> dict[str, int]:
    """Linux TCP options of every broker connection (pika skips, with a warning, what the
    platform lacks). Sent bytes unacknowledged for `dead_after(heartbeat)` → the kernel gives
    the connection up (a peer's kernel acknowledges within milliseconds, even when the broker
    process itself is stuck, so this only fires on a dead path); an idle connection is probed
    after a heartbeat, three times a second apart."""
    seconds = max(1, int(heartbeat or DEFAULT_HEARTBEAT))
    return {
        "TCP_USER_TIMEOUT": int(dead_after(seconds) * 1000),
        "TCP_KEEPIDLE": seconds,
        "TCP_KEEPINTVL": 1,
        "TCP_KEEPCNT": 3,
    }


def connection_parameters(
    value: str | None = None,
    *,
    heartbeat: int | None = None,
    connect_timeout: float | None = None,
    name: str | None = None,
    **options,
) -> list[pika.URLParameters]:
    """pika parameters for each node, one attempt each, with the heartbeat (default
    `CQRS_AMQP_HEARTBEAT`; 0 turns it off), the per-node connect timeout (default
    `CQRS_AMQP_CONNECT_TIMEOUT`) and `tcp_options`; `name` is what the broker's management
    shows for the connection (with this process's pid); `options` set on every one
    (`blocked_connection_timeout`, …). The one place the project builds them: both
    `blocking_connection` and the probes of `connectivity` take theirs from here."""
    heartbeat = heartbeat_seconds() if heartbeat is None else int(heartbeat)
    timeout = connect_timeout_seconds() if connect_timeout is None else float(connect_timeout)
    parameters = []
    for url in broker_urls(value):
        params = pika.URLParameters(url)
        params.connection_attempts = 1
        params.retry_delay = 0
        params.heartbeat = heartbeat
        params.socket_timeout = timeout
        params.stack_timeout = timeout
        params.tcp_options = tcp_options(heartbeat)
        if name:
            params.client_properties = {"connection_name": f"{name} pid {os.getpid()}"}
        for name, option in options.items():
            setattr(params, name, option)
        parameters.append(params)
    return parameters


class WatchedConnection(SelectConnection):
    """pika's SelectConnection that looks at its link every second (`TICK`), in its own I/O
    loop — including while a BlockingConnection waits inside a call:

    - nothing received for `dead_after(heartbeat)` seconds: the link is dead; the connection
      ends with `AMQPHeartbeatTimeout`, as pika's own (slower) checker would end it;
    - past `deadline` (a monotonic time, set by whoever bounds the work on it): it ends too;
    - `on_tick()`, when set, is called (a process beating its own heartbeat file while it
      waits on the broker).

    Sending heartbeats stays pika's job."""

    on_tick: Callable[[], None] | None = None
    deadline: float | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._received_bytes = 0
        self._received_at = time.monotonic()
        self._adapter_call_later(TICK, self._tick)

    def _tick(self) -> None:
        if self.is_closed or self.is_closing:
            return
        now = time.monotonic()
        if self.bytes_received != self._received_bytes:
            self._received_bytes, self._received_at = self.bytes_received, now
        heartbeat = self.params.heartbeat
        silent = now - self._received_at
        if self.is_open and heartbeat and silent > dead_after(heartbeat):
            self.abort(
                AMQPHeartbeatTimeout(
                    f"nothing received from the broker for {silent:.0f}s (heartbeat "
                    f"{heartbeat}s): the link is dead"
                )
            )
            return
        if self.is_open and self.deadline is not None and now > self.deadline:
            self.abort(AMQPConnectionError("deadline passed: the broker did not answer in time"))
            return
        if self.on_tick is not None:
            try:
                self.on_tick()
            except Exception:  # a callback's failure must not stop the watch
                logger.exception("on_tick of a broker connection failed")
        self._adapter_call_later(TICK, self._tick)

    def abort(self, error: BaseException) -> None:
        """End the connection now, without the AMQP closing handshake (a dead link would never
        complete it): what pika's heartbeat checker does. The close callbacks get `error`."""
        if self.is_open:
            logger.warning("giving up a broker connection: %s", error)
            self._terminate_stream(error)


def blocking_connection(
    value: str | None = None,
    *,
    first: int = 0,
    on_tick: Callable[[], None] | None = None,
    **options,
) -> BlockingConnection:
    """A connection to the first node that answers, starting at node `first` (then the next
    ones, wrapping around); raises pika's error of the last one. `options` as in
    `connection_parameters`; `on_tick` as in `WatchedConnection`."""
    nodes = connection_parameters(value, **options)
    start = first % len(nodes)
    # `_impl_class` is pika's own seam for the connection underneath a BlockingConnection.
    connection = pika.BlockingConnection(
        nodes[start:] + nodes[:start], _impl_class=WatchedConnection
    )
    watched(connection).on_tick = on_tick
    return connection


def watched(connection: BlockingConnection) -> WatchedConnection:
    """The `WatchedConnection` under a BlockingConnection made by `blocking_connection`."""
    return connection._impl


def set_deadline(connection: BlockingConnection, seconds: float | None) -> None:
    """Past `seconds` from now (None: no deadline), the connection ends: whatever call waits on
    it raises instead of waiting for the broker any longer."""
    watched(connection).deadline = None if seconds is None else time.monotonic() + seconds


def node_of(connection: BlockingConnection, value: str | None = None) -> int:
    """Which node of `value` the connection went to (by host and port), 0 when unknown."""
    params = watched(connection).params
    for index, url in enumerate(broker_urls(value)):
        node = pika.URLParameters(url)
        if (node.host, node.port) == (params.host, params.port):
            return index
    return 0


def celery_broker_url(value: str) -> str:
    """kombu's spelling of several nodes: separated by semicolons (it fails over in order)."""
    return ";".join(broker_urls(value))


def celery_socket_settings(heartbeat: int) -> dict[int, int]:
    """`tcp_options` in py-amqp's spelling (socket constants as keys), for Celery's
    `broker_transport_options["socket_settings"]`."""
    import socket

    return {
        getattr(socket, name): value
        for name, value in tcp_options(heartbeat).items()
        if hasattr(socket, name)
    }


class LinkKeeper:
    """Keeps a BlockingConnection serviced while its owner is busy elsewhere.

    A BlockingConnection sends and reads heartbeats only while its thread is inside pika. A
    consumer applying a batch can spend long in the database (a lock waited for up to
    DB_STATEMENT_TIMEOUT or SQLITE_BUSY_TIMEOUT, a paused database): past 2–3 heartbeats of
    silence the broker would drop a healthy consumer and hand its messages to another. Inside
    `busy()`, a thread of the keeper calls `process_data_events(0)` about every `every`
    seconds: heartbeats go out, what arrives is read and queued for later (deliveries wait in
    the consumer's queue), and the connection's watch (`WatchedConnection`) keeps ticking. The
    two threads never use the connection at the same time: the owner takes the keeper's lock
    to leave `busy()`, and does not touch the connection inside it."""

    def __init__(self, connection: BlockingConnection, every: float = TICK) -> None:
        self.connection = connection
        self.every = every
        self.failed: BaseException | None = None  # what ended the connection while busy
        self._lock = threading.Lock()
        self._busy = False
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="amqp-keeper", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """The owner works elsewhere inside this block, and does not use the connection."""
        with self._lock:
            self._busy = True
        try:
            yield
        finally:
            with self._lock:
                self._busy = False

    def _run(self) -> None:
        while not self._closed.wait(self.every):
            with self._lock:
                if not self._busy or self.failed is not None or self._closed.is_set():
                    continue
                try:
                    self.connection.process_data_events(0)
                except Exception as exc:  # the owner meets the closed connection next
                    self.failed = exc

    def close(self) -> None:
        self._closed.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(self.every + 5)
