"""Configuration from the environment and each service's `.env.<service>` file.

Real environment variables always win over the file, so one exported variable overrides
whatever a developer keeps in their env file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values, load_dotenv

#: Defaults of the public contract (they match docker-compose.yaml).
DEFAULT_RABBITMQ_URL = "amqp://admin:admin@localhost:5672/"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ImproperlyConfiguredEnv(ValueError):
    """An environment variable holds a value that cannot be used."""


def env_file_path(service: str, repo_root: Path) -> Path:
    """Where a service reads its env file: `<SERVICE>_ENV_FILE`, else `<repo>/.env.<service>`."""
    override = os.environ.get(f"{service.upper()}_ENV_FILE")
    return Path(override) if override else repo_root / f".env.{service}"


def load_service_env(service: str, repo_root: Path) -> Path:
    """Load the service's env file into `os.environ` without overriding real variables."""
    path = env_file_path(service, repo_root)
    if path.is_file():
        load_dotenv(path, override=False)
    return path


def read_service_env(service: str, repo_root: Path) -> dict[str, str]:
    """The environment the service would see, without touching this process's environment."""
    path = env_file_path(service, repo_root)
    values = (
        {k: v for k, v in dotenv_values(path).items() if v is not None} if path.is_file() else {}
    )
    values.update(os.environ)
    return values


REPLICATION_MODES = ("cqrs", "celery")


def parse_replication_mode(value: str | None) -> str:
    """REPLICATION_MODE: `cqrs` (django-cqrs messages, the default) or `celery` (a task each)."""
    mode = (value or "cqrs").strip().lower()
    if mode not in REPLICATION_MODES:
        raise ImproperlyConfiguredEnv(f"REPLICATION_MODE={value!r}: use cqrs or celery")
    return mode


QUEUE_TYPES = ("quorum", "classic")


def parse_queue_type(value: str | None, name: str = "CQRS_QUEUE_TYPE") -> str | None:
    """A queue type variable (`name`): `quorum`, `classic`, or None (unset: the caller's
    default; for CQRS_QUEUE_TYPE, decided by the broker's state)."""
    if not value or not value.strip():
        return None
    queue_type = value.strip().lower()
    if queue_type not in QUEUE_TYPES:
        raise ImproperlyConfiguredEnv(f"{name}={value!r}: use quorum or classic")
    return queue_type


def env_str(name: str, default: str = "", environ: Mapping[str, str] | None = None) -> str:
    return (os.environ if environ is None else environ).get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfiguredEnv(f"{name}={raw!r} is not a boolean (use true/false, 1/0)")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfiguredEnv(f"{name}={raw!r} is not an integer") from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfiguredEnv(f"{name}={raw!r} is not a number") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def redact_url(url: str) -> str:
    """The URL with its password hidden, for messages, logs and `/health`. Several URLs
    separated by commas are each redacted.

    Never trusts a parser: a password with `/`, `#`, `?` or `@` makes `urlsplit` see another
    netloc, and a URL it can't parse must not come back with the password in it. Everything
    between `scheme://user:` and the last `@` before the host is hidden."""
    return ",".join(_redact_one(part) for part in url.split(","))


def _redact_one(url: str) -> str:
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    if "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    if not colon:
        return url  # a user without a password
    return f"{scheme}://{user}:***@{host}"
