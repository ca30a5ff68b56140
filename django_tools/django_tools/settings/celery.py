"""Celery: broker RabbitMQ, results in Redis, each service's tasks on a queue of its own
(`CELERY_TASK_DEFAULT_QUEUE` and `CELERY_BEAT_SCHEDULE` are the service's)."""

from __future__ import annotations

from django_tools.broker import celery_broker_url
from django_tools.env import env_str, parse_queue_type
from django_tools.settings.base import RABBITMQ_URL, REDIS_URL

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
CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
