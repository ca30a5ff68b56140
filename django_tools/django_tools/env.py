"""Configuration from the environment and each service's `.env.<service>` file.

Real environment variables always win over the file, so one exported variable overrides
whatever a developer keeps in their env file.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote

from dotenv import dotenv_values, load_dotenv

#: Defaults of the public contract (they match docker-compose.yaml).
DEFAULT_RABBITMQ_URL = "amqp://admin:admin@localhost:5672/"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ImproperlyConfiguredEnv(ValueError):
    """An environment variable holds a value that cannot be used. Its message is one line
    naming the variable, the value (a URL's password hidden) and what is accepted."""


#: The exit status of every entry point (manage.py, gunicorn, celery, `apis up`) refusing a
#: bad setting, as for a usage error.
BAD_SETTING_EXIT = 2


@contextmanager
def exit_on_bad_setting(program: str) -> Iterator[None]:
    """Around an entry point: a bad setting is one line on stderr (`program: VARIABLE='value'
    …, use …`) and exit status 2, instead of a traceback through the settings modules."""
    try:
        yield
    except ImproperlyConfiguredEnv as exc:
        print(f"{program}: {scrub(str(exc))}", file=sys.stderr, flush=True)
        raise SystemExit(BAD_SETTING_EXIT) from None


def parse_database_url(url: str, **options) -> dict:
    """dj-database-url's DATABASES entry for DATABASE_URL, or ImproperlyConfiguredEnv saying
    what is wrong in one line (the URL's password hidden)."""
    import dj_database_url

    try:
        return dj_database_url.parse(url, **options)
    except dj_database_url.UnknownSchemeError:
        scheme = url.partition("://")[0] if "://" in url else ""
        why = f"the scheme {scheme!r} is not supported" if scheme else "it has no scheme"
    except Exception:  # dj-database-url's ParseError, or ValueError from urllib
        why = "its host, port or password cannot be read (a port is a number up to 65535)"
    raise ImproperlyConfiguredEnv(
        f"DATABASE_URL={redact_url(url)!r}: {why}; use sqlite:///path/to/file.sqlite3 or "
        "postgres://user:password@host:5432/name (a `/`, `?`, `#` or `@` of a password "
        "percent-encoded)"
    )


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


#: The replica's queue types (CQRS_QUEUE_TYPE, `cqrs_queues migrate --to`), defined here, below
#: Django, so that parsing the environment needs no broker code; `replica.topology` uses them.
QUORUM, CLASSIC = "quorum", "classic"
QUEUE_TYPES = (QUORUM, CLASSIC)


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
        raise ImproperlyConfiguredEnv(
            f"{name}={raw!r} is not an integer (use a whole number, e.g. {default})"
        ) from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfiguredEnv(
            f"{name}={raw!r} is not a number (use one such as {default})"
        ) from None


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


# --- secrets never in output ------------------------------------------------------------------

#: Variables whose whole value is a secret (comma-separated lists: each item).
SECRET_VARIABLES = (
    "SECRET_KEY",
    "SECRET_KEY_FALLBACKS",
    "PRODUTOS_API_KEY",
    "CQRS_SIGNING_KEY",
    "APIS_ADMIN_PASSWORD",
)
#: Variables holding URLs that may carry a password (several nodes: comma-separated).
URL_VARIABLES = ("RABBITMQ_URL", "REDIS_URL", "DATABASE_URL", "CELERY_BROKER_URL")
#: Public values that are no secret (the lab's documented defaults): masking them would only
#: garble messages such as "apis up: …" or "user admin lacks …".
_PUBLIC = frozenset({"admin", "guest", "apis", "postgres", "password", "change-me", "changeme"})
#: Shorter fragments are not masked on their own (too many false hits); the messages that
#: quote them are rewritten by pattern instead (`_QUOTED_BY_PARSERS`).
_MIN_FRAGMENT = 4
_MASK = "***"
#: `scheme://user:password@` anywhere in a text, up to the last `@` of the token.
_URL_WITH_PASSWORD = re.compile(r"""([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'"]*):[^\s'"]*@""")
#: What urllib (pika's and redis's URL parsing) quotes from a URL it cannot parse: with an
#: unencoded `/`, `?` or `#` in a password, the part before it is taken for the port.
_QUOTED_BY_PARSERS = re.compile(
    r"(cast to integer value as |invalid literal for int\(\) with base 10: )'[^']*'"
)


def _password_of(url: str) -> str | None:
    """The password of a URL as `redact_url` reads it (between `user:` and the last `@`)."""
    _scheme, separator, rest = url.partition("://")
    if not separator or "@" not in rest:
        return None
    userinfo = rest.rpartition("@")[0]
    _user, colon, password = userinfo.partition(":")
    return password if colon and password else None


def _pieces(secret: str) -> set[str]:
    """A secret, URL-decoded, and the fragments a parser may cut it into."""
    found = {secret, unquote(secret)}
    for value in list(found):
        found.update(re.split(r"[/?#@:;,\s]", value))
    return {piece for piece in found if len(piece) >= _MIN_FRAGMENT and piece not in _PUBLIC}


@functools.lru_cache(maxsize=64)
def _secrets(values: tuple[str, ...], urls: tuple[str, ...]) -> tuple[str, ...]:
    found: set[str] = set()
    for value in values:
        for item in value.split(","):
            if item.strip():
                found |= _pieces(item.strip())
    for value in urls:
        for url in value.split(","):
            password = _password_of(url.strip())
            if password:
                found |= _pieces(password)
    return tuple(sorted(found, key=len, reverse=True))  # longest first


def known_secrets(
    urls: Iterable[str] = (), environ: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """Every secret this process knows of: the values of `SECRET_VARIABLES`, the passwords of
    `URL_VARIABLES` and of `urls`, with the fragments a URL parser may quote."""
    environ = os.environ if environ is None else environ
    values = tuple(environ.get(name, "") for name in SECRET_VARIABLES)
    url_values = tuple(environ.get(name, "") for name in URL_VARIABLES) + tuple(urls)
    return _secrets(values, url_values)


def scrub(text: str, urls: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> str:
    """`text` fit for a response, a log line, the banner or a metric label: every URL in it
    redacted, every known secret (and fragment of one) masked, and what URL parsers quote
    from a URL they cannot read hidden. The one place where output is cleaned."""
    if not text:
        return text
    text = _URL_WITH_PASSWORD.sub(rf"\1:{_MASK}@", text)
    text = _QUOTED_BY_PARSERS.sub(rf"\1'{_MASK}'", text)
    for secret in known_secrets(urls, environ):
        if secret in text:
            text = text.replace(secret, _MASK)
    return text
