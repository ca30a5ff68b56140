"""Celery: broker RabbitMQ, results in Redis, each service's tasks on a queue of its own
(`CELERY_TASK_DEFAULT_QUEUE` and `CELERY_BEAT_SCHEDULE` are the service's)."""

from __future__ import annotations

from django_tools.broker import celery_broker_url, celery_socket_settings
from django_tools.chassis.settings.base import RABBITMQ_URL, REDIS_URL
from django_tools.chassis.settings.cqrs import CQRS_AMQP_CONNECT_TIMEOUT, CQRS_AMQP_HEARTBEAT
from django_tools.env import env_str, parse_queue_type

#: Put before every queue name: tests and benchmarks isolate themselves on a shared broker.
CELERY_QUEUE_PREFIX = env_str("CELERY_QUEUE_PREFIX")
#: The type of the services' task queues: classic (unset), or quorum — in a RabbitMQ cluster, so
#: that a task queue survives the loss of the node it lives on (a classic queue's worker stops).
#: Changing it needs the queues deleted first (they are declared by every worker and publisher).
CELERY_QUEUE_TYPE = parse_queue_type(env_str("CELERY_QUEUE_TYPE"), "CELERY_QUEUE_TYPE") or "classic"

#: kombu fails over between the nodes of RABBITMQ_URL, in order.
CELERY_BROKER_URL = celery_broker_url(RABBITMQ_URL)
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_RESULT_EXPIRES = 3600
# Data only, never pickle, on every path bytes come in from the network: tasks, results (from
# Redis) and events. Celery's defaults are json today; these say so where a reviewer looks.
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_SERIALIZER = "json"
CELERY_RESULT_ACCEPT_CONTENT = ["json"]
CELERY_EVENT_SERIALIZER = "json"
# A task is acknowledged when it finished, and a worker killed mid-task gives it back.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Dead links, as for the relay and the consumer (django_tools.broker): the worker negotiates
# CQRS_AMQP_HEARTBEAT and looks at it every second (py-amqp gives the connection up after two
# heartbeats without a byte); a node gets CQRS_AMQP_CONNECT_TIMEOUT to answer; the same TCP
# options (TCP_USER_TIMEOUT, keepalive). And no blocking read or write waits longer than two
# heartbeats: a worker publishes its own events with confirms from inside its event loop (the
# `worker-heartbeat` every 2 s), and on a silent link it waited for that confirm for ever —
# the loop, its AMQP heartbeat checks with it, frozen.
_DEAD_AFTER = 2 * max(1, CQRS_AMQP_HEARTBEAT)
CELERY_BROKER_HEARTBEAT = CQRS_AMQP_HEARTBEAT
CELERY_BROKER_HEARTBEAT_CHECKRATE = max(1, CQRS_AMQP_HEARTBEAT)
CELERY_BROKER_CONNECTION_TIMEOUT = CQRS_AMQP_CONNECT_TIMEOUT
# The remote-control queue (`celery inspect ping`: compose's health checks) is not exclusive:
# exclusive, it belongs to the worker's connection, and a worker reconnecting after a silent
# link died found it still held by the dead connection (the broker notices only after 2–3
# heartbeats) and crashed (405 RESOURCE_LOCKED). Not exclusive, it is still auto-deleted, and
# expires 10 s after its last consumer left (`control_queue_expires`).
CELERY_CONTROL_QUEUE_EXCLUSIVE = False
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "confirm_publish": True,
    "socket_settings": celery_socket_settings(CQRS_AMQP_HEARTBEAT),
    "read_timeout": max(1, CQRS_AMQP_HEARTBEAT),
    "write_timeout": _DEAD_AFTER,
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
