"""The library apps stand without the services' chassis: a Django project of its own (its own
settings, SQLite) installs django_tools.outbox or django_tools.replica,
imports every module of the app, passes its system checks and replicates, while any import of
django_tools.chassis or django_tools.settings fails. Each in a fresh interpreter: this suite's
own settings are the chassis's."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

PROJECT = """
import importlib, importlib.abc, pkgutil, sys

CHASSIS = ("django_tools.chassis", "django_tools.settings")


class NoChassis(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name in CHASSIS or name.startswith(tuple(c + "." for c in CHASSIS)):
            raise ImportError(f"the library imported the chassis: {name}")
        return None


sys.meta_path.insert(0, NoChassis())

import django
from django.conf import settings

app, models_app, transport = sys.argv[1:4]
settings.configure(
    # The admin too (the apps have admin pages), with what the admin itself needs.
    INSTALLED_APPS=[
        "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
        "django.contrib.messages", "django.contrib.sessions", app, "dj_cqrs", models_app,
    ],
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
    ],
    TEMPLATES=[{
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": [
            "django.template.context_processors.request",
            "django.contrib.auth.context_processors.auth",
            "django.contrib.messages.context_processors.messages",
        ]},
    }],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    USE_TZ=True,
    CQRS={
        "transport": transport,
        "url": "amqp://guest:guest@127.0.0.1:5672/",
        "queue": "boundary",
        "replica": {
            "CQRS_MAX_RETRIES": 3, "retry_base": 1.0, "retry_factor": 2.0, "retry_cap": 10.0,
            "retry_jitter": 0.0, "prefetch": 10, "batch_size": 10,
        },
    },
)
django.setup()

from django.core.management import call_command

call_command("migrate", verbosity=0)
call_command("check", fail_level="WARNING")
package = importlib.import_module(app)
for module in pkgutil.walk_packages(package.__path__, app + "."):
    importlib.import_module(module.name)

T = "2026-01-01T00:00:00+00:00"
BOOK = {"id": 1, "isbn": "978-1", "title": "one", "summary": "", "price": "9.90", "copies": 2,
        "in_print": True, "created_at": T, "updated_at": T, "cqrs_revision": 0, "cqrs_updated": T}
if models_app == "dj_master":
    from dj_master.models import Book
    from django_tools.outbox.models import OutboxEvent
    from django_tools.outbox.selectors import outbox_backlog

    Book.objects.create(isbn="978-1", title="one", price="9.90")
    assert OutboxEvent.objects.filter(cqrs_id="book").count() == 1
    assert outbox_backlog().count == 1
else:
    from dj_replica.models import BookReplica

    BookReplica.cqrs_save(BOOK)
    BookReplica.cqrs_save({**BOOK, "title": "two", "cqrs_revision": 1})
    BookReplica.cqrs_save({**BOOK, "title": "stale"})  # an older revision changes nothing
    assert BookReplica.objects.get(pk=1).title == "two"

loaded = sorted(name for name in sys.modules if name.startswith(CHASSIS))
assert not loaded, loaded
print("ok")
"""


@pytest.mark.parametrize(
    "app,models_app,transport",
    [
        ("django_tools.outbox", "dj_master", "django_tools.outbox.transport.OutboxTransport"),
        (
            "django_tools.replica",
            "dj_replica",
            "django_tools.replica.transport.ReliableRabbitMQTransport",
        ),
    ],
)
def test_a_project_uses_the_app_without_the_chassis(app, models_app, transport):
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", PROJECT, app, models_app, transport],
        env=env,
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


@pytest.mark.filterwarnings("ignore:django_tools.* moved to:DeprecationWarning")
@pytest.mark.parametrize(
    "old",
    [
        "django_tools.settings.base",
        "django_tools.settings.cqrs",
        "django_tools.settings.celery",
        "django_tools.settings.logging",
        "django_tools.settings.tracing",
        "django_tools.urls",
        "django_tools.views",
        "django_tools.wsgi",
        "django_tools.health",
        "django_tools.ninja",
        "django_tools.errors",
        "django_tools.gunicorn_conf",
        "django_tools.celery",
    ],
)
def test_an_old_path_is_the_chassis_module_for_one_release(old):
    """A project's settings, URLconf or gunicorn `--config python:…` written before the move
    still work: the old name is the same module (patched or reloaded as one)."""
    new = old.replace("django_tools.", "django_tools.chassis.", 1)
    assert importlib.import_module(old) is importlib.import_module(new)
