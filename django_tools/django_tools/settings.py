"""The Django settings both services share, built from the environment.

A service's `settings.py` calls `load_service_env()` first, then `common_settings()`, and adds
only what is its own (apps, URLs, the CQRS role).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import dj_database_url

from django_tools.env import (
    DEFAULT_RABBITMQ_URL,
    DEFAULT_REDIS_URL,
    ImproperlyConfiguredEnv,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_str,
)
from django_tools.observability.logs import logging_settings

_INSECURE_LOCAL_KEY = "django-insecure-apis-ecosystem-local-only-set-SECRET_KEY-in-production"


def database_settings(service: str, repo_root: Path) -> dict[str, Any]:
    """`DATABASE_URL`, else a SQLite file under `<repo>/var/` named after the service."""
    default = f"sqlite:///{repo_root / 'var' / f'{service}.sqlite3'}"
    url = env_str("DATABASE_URL") or default
    db = dj_database_url.parse(url, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))
    db["CONN_HEALTH_CHECKS"] = True
    if db["ENGINE"] == "django.db.backends.sqlite3":
        Path(db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
        # Several processes (server workers, consumer) write to one file: WAL lets readers go on
        # during a write, IMMEDIATE takes the write lock up front instead of failing mid-transaction
        # on a lock upgrade, and the busy timeout makes writers queue instead of erroring.
        db["OPTIONS"] = {
            "timeout": env_float("SQLITE_BUSY_TIMEOUT", 30.0),
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
        db["CONN_MAX_AGE"] = 0 if db["NAME"] == ":memory:" else db["CONN_MAX_AGE"]
        # A file, not Django's in-memory default: tests run consumers in threads and processes
        # that must share the test database with normal locking.
        test_name = Path(tempfile.gettempdir()) / f"test_{service}_{os.getpid()}.sqlite3"
        db["TEST"] = {"NAME": str(test_name)}
    else:
        options = db.setdefault("OPTIONS", {})
        options.setdefault("connect_timeout", 5)
        # No statement waits for ever: a lock held elsewhere becomes an error (retried by the
        # consumer, a 500 on a request) instead of a stuck worker.
        options["options"] = f"-c statement_timeout={env_int('DB_STATEMENT_TIMEOUT', 30000)}"
        # Two services' test runs may share one server: keep their test databases apart.
        db["TEST"] = {"NAME": f"test_{service}"}
    return {"default": db}


def common_settings(*, service: str, base_dir: Path, repo_root: Path) -> dict[str, Any]:
    debug = env_bool("DEBUG", False)
    return {
        "BASE_DIR": base_dir,
        "REPO_ROOT": repo_root,
        "SERVICE_NAME": service,
        "SECRET_KEY": env_str("SECRET_KEY") or _INSECURE_LOCAL_KEY,
        "DEBUG": debug,
        "ALLOWED_HOSTS": env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "0.0.0.0"]),
        "RABBITMQ_URL": env_str("RABBITMQ_URL") or DEFAULT_RABBITMQ_URL,
        "REDIS_URL": env_str("REDIS_URL") or DEFAULT_REDIS_URL,
        # How changes travel: django-cqrs messages (cqrs) or one Celery task each (celery).
        "REPLICATION_MODE": replication_mode(),
        # The replica's Celery queue, where REPLICATION_MODE=celery sends the changes.
        "REPLICA_TASK_QUEUE": env_str("REPLICA_TASK_QUEUE")
        or f"{env_str('CELERY_QUEUE_PREFIX')}feed.tasks",
        "DATABASES": database_settings(service, repo_root),
        "DEFAULT_AUTO_FIELD": "django.db.models.BigAutoField",
        "MIDDLEWARE": [
            "django_tools.observability.correlation.RequestIdMiddleware",
            "django_tools.observability.metrics.HttpMetricsMiddleware",
            "django.middleware.security.SecurityMiddleware",
            "whitenoise.middleware.WhiteNoiseMiddleware",
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
            "django.middleware.clickjacking.XFrameOptionsMiddleware",
        ],
        "TEMPLATES": [
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "DIRS": [],
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ],
                },
            },
        ],
        "LANGUAGE_CODE": "pt-br",
        "TIME_ZONE": "UTC",
        "USE_I18N": True,
        "USE_TZ": True,
        "STATIC_URL": "static/",
        # Serve admin and API-docs assets straight from the apps under gunicorn, no collectstatic.
        "WHITENOISE_USE_FINDERS": True,
        "NINJA_PAGINATION_PER_PAGE": 100,
        "NINJA_PAGINATION_MAX_LIMIT": 1000,
        "LOGGING": logging_settings(service),
    }


def replication_mode() -> str:
    mode = (env_str("REPLICATION_MODE") or "cqrs").lower()
    if mode not in ("cqrs", "celery"):
        raise ImproperlyConfiguredEnv(f"REPLICATION_MODE={mode!r}: use cqrs or celery")
    return mode


def django_apps(*apps: str, cqrs_extensions: tuple[str, ...] = ()) -> list[str]:
    """Django's own apps plus the shared third-party ones, then the service's.

    `cqrs_extensions` come before dj_cqrs, so that their management commands replace
    django-cqrs's commands of the same name."""
    return [
        "django.contrib.admin",
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "django.contrib.messages",
        "django.contrib.staticfiles",
        "ninja",
        *cqrs_extensions,
        "dj_cqrs",
        "django_tools",
        *apps,
    ]
