"""Django itself, the hosts, and where the broker and Redis are."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

from django_tools.env import (
    DEFAULT_RABBITMQ_URL,
    DEFAULT_REDIS_URL,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_str,
    parse_database_url,
    parse_replication_mode,
)

# --- what a default is on loopback and off it: django_tools.exposure ------------------------

#: Unset: a service uses `local_secret_key(<repo>/var)`, good on loopback only (a server bound
#: off loopback refuses to start without a real one: django_tools.exposure).
SECRET_KEY = env_str("SECRET_KEY")
#: Old keys still accepted for what they signed (sessions), while a new SECRET_KEY takes over.
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS", [])
DEBUG = env_bool("DEBUG", False)
#: Loopback names only: a client elsewhere must be let in by name (never `0.0.0.0`, which any
#: client can send as its Host header).
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])

#: One or several nodes, comma-separated.
RABBITMQ_URL = env_str("RABBITMQ_URL") or DEFAULT_RABBITMQ_URL
REDIS_URL = env_str("REDIS_URL") or DEFAULT_REDIS_URL

#: How changes travel: django-cqrs messages (cqrs) or one Celery task each (celery).
REPLICATION_MODE = parse_replication_mode(env_str("REPLICATION_MODE"))

# --- databases: `database_settings()` in each service's settings --------------------------

#: DATABASE_URL (dj-database-url), else a SQLite file under <repo>/var/ named after the service.
DATABASE_URL = env_str("DATABASE_URL")
DB_CONN_MAX_AGE = env_int("DB_CONN_MAX_AGE", 60)
#: Seconds a SQLite writer waits for the lock before failing.
SQLITE_BUSY_TIMEOUT = env_float("SQLITE_BUSY_TIMEOUT", 30.0)
#: Milliseconds a PostgreSQL statement may run (or wait for a lock) before failing.
DB_STATEMENT_TIMEOUT = env_int("DB_STATEMENT_TIMEOUT", 30000)


def local_secret_key(folder: Path) -> str:
    """This machine's own SECRET_KEY for local use: made once at random and kept in
    `folder/secret_key` (readable by its owner only), shared by every process of the lab.

    Not a constant in the repository: anyone who read it could forge the sessions and signed
    values of every lab that kept the default. Where the folder cannot be written, a key for
    this process only (sessions then last as long as the process)."""
    path = folder / "secret_key"
    try:
        return path.read_text().strip() or _new_secret_key(path)
    except FileNotFoundError:
        return _new_secret_key(path)
    except OSError:
        return secrets.token_urlsafe(50)


def _new_secret_key(path: Path) -> str:
    key = secrets.token_urlsafe(50)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole in a file of its own (mode 0600), then linked into place: a reader never
        # sees half a key, and of several processes starting together the first link wins.
        descriptor, temporary = tempfile.mkstemp(prefix=".secret_key.", dir=path.parent)
        with os.fdopen(descriptor, "w") as file:
            file.write(key)
        try:
            os.link(temporary, path)
        except FileExistsError:
            key = path.read_text().strip() or key
        finally:
            os.unlink(temporary)
    except OSError:
        pass
    return key


def database_settings(service: str, repo_root: Path) -> dict:
    """`DATABASES` of a service: DATABASE_URL, else `<repo>/var/<service>.sqlite3`."""
    url = DATABASE_URL or f"sqlite:///{repo_root / 'var' / f'{service}.sqlite3'}"
    db = parse_database_url(url, conn_max_age=DB_CONN_MAX_AGE)
    db["CONN_HEALTH_CHECKS"] = True
    if db["ENGINE"] == "django.db.backends.sqlite3":
        # Django's backend, with writers that queue promptly (django_tools.db.sqlite).
        db["ENGINE"] = "django_tools.db.sqlite"
        Path(db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
        # Several processes (server workers, consumer) write to one file: WAL lets readers go on
        # during a write, IMMEDIATE takes the write lock up front instead of failing mid-transaction
        # on a lock upgrade, and the busy timeout makes writers queue instead of erroring.
        db["OPTIONS"] = {
            "timeout": SQLITE_BUSY_TIMEOUT,
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
        options["options"] = f"-c statement_timeout={DB_STATEMENT_TIMEOUT}"
        # Two services' test runs may share one server: keep their test databases apart.
        db["TEST"] = {"NAME": f"test_{service}"}
    return {"default": db}


# --- Django -------------------------------------------------------------------------------

#: Django's own apps and the shared third-party ones; a service appends its own, and puts
#: apps whose management commands replace django-cqrs's (the replica app) before `dj_cqrs`.
DJANGO_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "ninja",
]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
MIDDLEWARE = [
    "django_tools.observability.correlation.RequestIdMiddleware",
    "django_tools.observability.metrics.HttpMetricsMiddleware",
    # Public defaults in effect: other machines get a 403 (before anything reads the Host).
    "django_tools.exposure.middleware.LoopbackOnlyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # The console's admin/base_site.html (chassis/templates), found before Django's.
        "DIRS": [Path(__file__).resolve().parent.parent / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
#: Django's, except that a default password (admin/admin) logs nobody in from another machine.
AUTHENTICATION_BACKENDS = ["django_tools.exposure.backends.DefaultPasswordBackend"]
LANGUAGE_CODE = "pt-br"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
# Serve admin and API-docs assets straight from the apps under gunicorn, no collectstatic.
WHITENOISE_USE_FINDERS = True
NINJA_PAGINATION_PER_PAGE = 100
NINJA_PAGINATION_MAX_LIMIT = 1000

# --- HTTPS (a production behind a TLS proxy: `manage.py check --deploy` clean) ------------

#: The services are reached over HTTPS only, through a proxy that terminates TLS and sets
#: X-Forwarded-Proto: secure cookies, redirect to HTTPS, HSTS. Probes and scrapes that reach a
#: process directly over HTTP (/health*, /metrics) are not redirected.
HTTPS_ONLY = env_bool("HTTPS_ONLY", False)
if HTTPS_ONLY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^health(/|$)", r"^metrics$"]
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# --- heartbeats of the processes without HTTP (django_tools.heartbeat) ----------------------

#: Where the outbox relay and the consumer workers write their heartbeat files, read by
#: `outbox_relay_health` and `cqrs_consume_health`. Unset: `<tmp>/apis-<service>-heartbeats`.
HEARTBEAT_DIR = env_str("HEARTBEAT_DIR") or None
