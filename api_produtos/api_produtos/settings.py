"""Settings of api_produtos, the master: owns Produto and publishes its changes."""

from pathlib import Path

from django_tools import cqrs
from django_tools.celery import celery_settings
from django_tools.env import env_str, load_service_env
from django_tools.settings import common_settings, django_apps

BASE_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = BASE_DIR.parent

load_service_env("produtos", REPO_ROOT)
_common = common_settings(service="produtos", base_dir=BASE_DIR, repo_root=REPO_ROOT)
globals().update(_common)

INSTALLED_APPS = django_apps("produto", "django_tools.outbox")
ROOT_URLCONF = "api_produtos.urls"
WSGI_APPLICATION = "api_produtos.wsgi.application"

CQRS = cqrs.master_settings(_common["RABBITMQ_URL"])
OUTBOX = cqrs.outbox_settings()
RECONCILE = cqrs.reconcile_settings()

globals().update(
    celery_settings(
        "produtos",
        _common["RABBITMQ_URL"],
        _common["REDIS_URL"],
        beat_schedule={
            "reconcile-replica": {
                "task": "outbox.reconcile_replica",
                "schedule": RECONCILE["interval_seconds"],
            },
            "prune-outbox": {
                "task": "outbox.prune",
                "schedule": float(OUTBOX["prune_every_seconds"]),
            },
        },
    )
)

#: Key every write must send as `X-API-Key`. Unset: writes are open (local lab use) and the
#: service says so in its log at start-up.
PRODUTOS_API_KEY = env_str("PRODUTOS_API_KEY") or None
