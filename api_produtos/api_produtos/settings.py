"""Settings of api_produtos, the master: owns Produto and publishes its changes.

The shared settings come from django_tools.chassis.settings (one module per concern); what
follows them is this service's own.
"""

from pathlib import Path

from django_tools.chassis.celery import task_queues
from django_tools.env import env_str, load_service_env

SERVICE_NAME = "produtos"
#: How the operator's console names this service (its header: django_tools.admin).
SERVICE_LABEL = "api_produtos"
BASE_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = BASE_DIR.parent
load_service_env(SERVICE_NAME, REPO_ROOT)  # .env.produtos, before anything reads the environment

from django_tools.chassis.settings.base import *  # noqa: E402, F403
from django_tools.chassis.settings.celery import *  # noqa: E402, F403
from django_tools.chassis.settings.cqrs import *  # noqa: E402, F403
from django_tools.chassis.settings.logging import *  # noqa: E402, F403
from django_tools.chassis.settings.tracing import *  # noqa: E402, F403

INSTALLED_APPS = [*DJANGO_APPS, "dj_cqrs", "django_tools", "produto", "django_tools.outbox"]  # noqa: F405
ROOT_URLCONF = "api_produtos.urls"
WSGI_APPLICATION = "api_produtos.wsgi.application"
DATABASES = database_settings(SERVICE_NAME, REPO_ROOT)  # noqa: F405
# Unset: this machine's own key under var/ (loopback only: django_tools.exposure).
SECRET_KEY = SECRET_KEY or local_secret_key(REPO_ROOT / "var")  # noqa: F405

CQRS = {
    # Writes go to the outbox in their own transaction; the relay publishes them.
    "transport": CQRS_TRANSPORT or OUTBOX_TRANSPORT,  # noqa: F405
    "url": RABBITMQ_URL,  # noqa: F405
    "exchange": CQRS_EXCHANGE,  # noqa: F405
    "master": CQRS_MASTER_OPTIONS,  # noqa: F405
}

#: The replica this master reconciles with: api_feed on this machine unless told otherwise.
RECONCILE_REPLICA_URL = env_str("FEED_URL") or "http://127.0.0.1:8000"
#: REPLICATION_MODE=celery: the replica's Celery queue, where the relay sends the changes.
REPLICA_TASK_QUEUE = env_str("REPLICA_TASK_QUEUE") or f"{CELERY_QUEUE_PREFIX}feed.tasks"  # noqa: F405

CELERY_TASK_DEFAULT_QUEUE = f"{CELERY_QUEUE_PREFIX}{SERVICE_NAME}.tasks"  # noqa: F405
# Celery's control (pidbox) and event traffic in exchanges of this service's own, not Celery's
# shared `celery.pidbox` / `celeryev`: one service's broker user then has no say over the other's
# workers (least privilege: CQRS.md#segurança).
CELERY_CONTROL_EXCHANGE = f"{CELERY_QUEUE_PREFIX}{SERVICE_NAME}"  # noqa: F405
CELERY_EVENT_EXCHANGE = CELERY_EVENT_QUEUE_PREFIX = f"{CELERY_CONTROL_EXCHANGE}.celeryev"
CELERY_TASK_QUEUES = task_queues(
    CELERY_TASK_DEFAULT_QUEUE,
    REPLICA_TASK_QUEUE,
    queue_type=CELERY_QUEUE_TYPE,  # noqa: F405
)
CELERY_BEAT_SCHEDULE = {
    "reconcile-replica": {"task": "outbox.reconcile_replica", "schedule": RECONCILE_INTERVAL},  # noqa: F405
    "prune-outbox": {"task": "outbox.prune", "schedule": float(OUTBOX_PRUNE_EVERY)},  # noqa: F405
}

#: Key every write must send as `X-API-Key`. Unset: writes are open (local lab use) and the
#: service says so in its log at start-up.
PRODUTOS_API_KEY = env_str("PRODUTOS_API_KEY") or None
