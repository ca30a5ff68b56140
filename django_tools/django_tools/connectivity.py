"""Bounded-time probes of the infrastructure: used by `/health` and by `apis up` before it starts.

Each probe raises `Unreachable` with a short human reason; none of them can hang longer than
its timeout, so a dead or black-holed broker never blocks a request.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager

import pika
import redis
from pika.adapters.blocking_connection import BlockingChannel
from pika.adapters.utils.connection_workflow import AMQPConnectorException
from pika.exceptions import AMQPError

from django_tools.broker import blocking_connection
from django_tools.env import redact_url, scrub


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
        params = pika.URLParameters(url)
    except Exception as exc:  # pika raises several types for a malformed URL
        raise Unreachable(f"invalid RABBITMQ_URL {redact_url(url)}: {exc}") from exc
    params.socket_timeout = timeout
    params.stack_timeout = timeout
    params.blocked_connection_timeout = timeout
    params.connection_attempts = 1
    params.retry_delay = 0
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
