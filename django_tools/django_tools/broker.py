"""Connections to RabbitMQ: one node, or several for failover.

`RABBITMQ_URL` takes one AMQP URL or several separated by commas (the nodes of a cluster). Every
connection tries them in order and takes the first that answers; a long-lived session (relay,
consumer) that loses its node connects again the same way and so moves on to a node that is up.
A node that refuses at once costs nothing; a node that does not answer costs its socket timeout.
"""

from __future__ import annotations

import pika
from django.conf import settings
from pika.adapters.blocking_connection import BlockingConnection


def broker_urls(value: str | None = None) -> list[str]:
    """The node URLs of `value` (default: django-cqrs's `CQRS["url"]`), in order."""
    if value is None:
        value = settings.CQRS["url"]
    urls = [part.strip() for part in value.split(",") if part.strip()]
    if not urls:
        raise ValueError("no RabbitMQ URL given")
    return urls


def connection_parameters(value: str | None = None, **options) -> list[pika.URLParameters]:
    """pika parameters for each node, one attempt each; `options` set on every one
    (`socket_timeout`, `blocked_connection_timeout`, …)."""
    parameters = []
    for url in broker_urls(value):
        params = pika.URLParameters(url)
        params.connection_attempts = 1
        params.retry_delay = 0
        for name, option in options.items():
            setattr(params, name, option)
        parameters.append(params)
    return parameters


def blocking_connection(value: str | None = None, **options) -> BlockingConnection:
    """A connection to the first node that answers; raises pika's error of the last one."""
    return pika.BlockingConnection(connection_parameters(value, **options))


def celery_broker_url(value: str) -> str:
    """kombu's spelling of several nodes: separated by semicolons (it fails over in order)."""
    return ";".join(broker_urls(value))
