"""DJANGO_OUTBOX_PATTERN for both overlay settings of the lab's django-outbox-pattern pipeline:
the broker's STOMP listener (`APIS_LAB_STOMP_PORT`, on RABBITMQ_URL's host, user and vhost),
the rest as the library's README recommends for production."""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

#: The STOMP port of the lab's broker (a private node with rabbitmq_stomp; in the fault suite,
#: the proxy in front of it).
STOMP_PORT_ENV = "APIS_LAB_STOMP_PORT"


def outbox_pattern_settings(rabbitmq_url: str) -> dict:
    first = urlsplit(rabbitmq_url.split(",")[0].strip())
    port = os.environ.get(STOMP_PORT_ENV) or "61613"
    return {
        "DEFAULT_STOMP_HOST_AND_PORTS": [(first.hostname or "127.0.0.1", int(port))],
        "DEFAULT_STOMP_USERNAME": unquote(first.username or "guest"),
        "DEFAULT_STOMP_PASSCODE": unquote(first.password or "guest"),
        "DEFAULT_STOMP_VHOST": unquote(first.path[1:]) if first.path[1:] else "/",
        # Its production defaults, spelled out: the relay resends 50 times (3 at once, then a
        # pause of 4 min, then every minute); durable queues, one message in flight per
        # consumer (in order), a dead-letter queue; the consumer retries a database error 3
        # times (2 s, 4 s, 6 s) before dead-lettering; idempotence by the `Received` table.
        "DEFAULT_MAXIMUM_RETRY_ATTEMPTS": 50,
        "DEFAULT_PAUSE_FOR_RETRY": 240,
        "DEFAULT_WAIT_RETRY": 60,
        "DEFAULT_PRODUCER_WAITING_TIME": 1,
        "DEFAULT_STOMP_QUEUE_HEADERS": {
            "durable": "true",
            "auto-delete": "false",
            "prefetch-count": "1",
        },
        "DEFAULT_STOMP_HEARTBEATS": (10000, 10000),
        "DEFAULT_CONSUMER_MAX_RETRY_ATTEMPTS": 3,
        "DEFAULT_CONSUMER_RETRY_WAIT": 2,
        # "Less than your container's termination grace period": the lab's is 15 s.
        "DEFAULT_CONSUMER_SHUTDOWN_TIMEOUT": 10,
        # The one addition: messages RabbitMQ keeps across a restart (see persistent_headers).
        "DEFAULT_GENERATE_HEADERS": "apis_lab.peers.outbox_pattern_app.persistent_headers",
    }
