"""What must hold before a service answers anyone but this machine.

On loopback (`apis up`, `runserver` on a laptop) nothing needs to be set: the lab's public
defaults — no SECRET_KEY (a key generated for this machine is used), no write key, the
loopback ALLOWED_HOSTS, admin/admin — only ever reach this machine. Off loopback they would let
anyone in, so while any of them is in effect:

- a server bound off loopback refuses to start, in one line naming what to set: `apis up --host
  0.0.0.0` and gunicorn (`django_tools.chassis.gunicorn_conf`, the containers' command);
- whatever server runs the service (`manage.py runserver 0:8001` included), it answers loopback
  clients only (`middleware.LoopbackOnlyMiddleware`: a JSON 403 naming what to set), so the
  seed's `runserver 0:8001` keeps serving this machine and nobody else;
- a default password never logs anyone in from another machine
  (`backends.DefaultPasswordBackend`).

This module holds the rules and needs no Django settings (`apis up` uses it before starting
anything); the middleware and the backend are in modules of their own.

The rules read the environment (the service's `.env.<service>` included), the same way for
`apis up` (before it starts anything) and for a running service.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Iterable, Mapping

from django.conf import settings
from django.http import HttpRequest

logger = logging.getLogger("django_tools.exposure")

DOCS = "CQRS.md#segurança"
#: The service whose writes need a key, and the variable holding it.
WRITE_KEYS = {"produtos": "PRODUTOS_API_KEY"}
#: Values published somewhere (docs, examples, compose files, old defaults): no secret at all.
PUBLIC_VALUES = frozenset({
    "", "change-me", "changeme", "secret", "ecosystem-local-key", "lab-key", "admin", "password",
    "django-insecure-apis-ecosystem-local-only-set-SECRET_KEY-in-production",
})  # fmt: skip
#: A write key shorter than this is guessable (`secrets.token_urlsafe(32)` makes 43).
MIN_API_KEY_LENGTH = 16
#: Passwords an admin account must not have off loopback (besides its own user name).
DEFAULT_PASSWORDS = ("admin", "password", "changeme", "change-me")
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
#: Headers a reverse proxy adds: a request carrying one came from another machine, even if
#: the proxy itself connected from loopback.
FORWARDING_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


# --- addresses -------------------------------------------------------------------------------


def is_loopback_address(address: str | None) -> bool:
    """An IP address (or `localhost`) of this machine only: 127.0.0.0/8, ::1, ::ffff:127.x."""
    if not address:
        return False
    address = address.strip().strip("[]")
    if address == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def is_loopback_bind(host: str | tuple | None) -> bool:
    """Whether a server bound to `host` (`127.0.0.1`, `0.0.0.0`, `::`, a gunicorn address
    tuple, a unix socket path) can be reached from this machine only. A name other than
    `localhost` or a wildcard counts as reachable from elsewhere."""
    if isinstance(host, tuple):
        host = host[0]
    if isinstance(host, str) and host.startswith(("/", "unix:")):
        return True  # a unix socket: only this machine reaches it
    return is_loopback_address(host)


# --- the rules -------------------------------------------------------------------------------


def secret_key_problem(value: str | None) -> str | None:
    """None when SECRET_KEY is fit for use off loopback (Django's own rule, `check --deploy`'s
    security.W009: 50 characters or more, 5 different, not `django-insecure-`)."""
    if not value or value in PUBLIC_VALUES:
        return "SECRET_KEY"
    if len(value) < 50 or len(set(value)) < 5 or value.startswith("django-insecure-"):
        return "SECRET_KEY (50+ random characters)"
    return None


def allowed_hosts_problem(value: str | None) -> str | None:
    """None when ALLOWED_HOSTS names real hosts: set, no wildcard, not only loopback names."""
    if value is None or not value.strip():
        return "ALLOWED_HOSTS"
    hosts = [h.strip().lower() for h in value.split(",") if h.strip()]
    if "*" in hosts or "0.0.0.0" in hosts:  # nosec B104 # compared
        return "ALLOWED_HOSTS (real host names, no * or 0.0.0.0)"
    if all(host in LOOPBACK_NAMES or is_loopback_address(host) for host in hosts):
        return "ALLOWED_HOSTS (the names clients use to reach this host)"
    return None


def env_problems(environ: Mapping[str, str], service: str | None) -> list[str]:
    """What is still a public default in `environ` for `service`: a list of what to set."""
    problems = []
    for problem in (
        secret_key_problem(environ.get("SECRET_KEY")),
        _write_key_problem(environ, service),
        allowed_hosts_problem(environ.get("ALLOWED_HOSTS")),
    ):
        if problem:
            problems.append(problem)
    if (environ.get("DEBUG") or "").strip().lower() in {"1", "true", "yes", "on"}:
        problems.append("DEBUG=false")
    return problems


def _write_key_problem(environ: Mapping[str, str], service: str | None) -> str | None:
    variable = WRITE_KEYS.get(service or "")
    if variable is None:
        return None
    value = (environ.get(variable) or "").strip()
    if value in PUBLIC_VALUES:
        return variable
    if len(value) < MIN_API_KEY_LENGTH:
        return f"{variable} ({MIN_API_KEY_LENGTH}+ random characters)"
    return None


def is_default_password(password: str | None, username: str | None = None) -> bool:
    if not password:
        return True
    return password.lower() in DEFAULT_PASSWORDS or (username is not None and password == username)


def admins_with_default_passwords(using: str = "default") -> list[str]:
    """User names of the active staff accounts whose password is a default (`admin/admin`): a
    database read, run when a server starts off loopback."""
    from django.contrib.auth import get_user_model
    from django.db import DatabaseError
    from django.db.models import Q

    model = get_user_model()
    try:
        accounts = list(
            model._default_manager.db_manager(using).filter(
                Q(is_staff=True) | Q(is_superuser=True), is_active=True
            )
        )
    except DatabaseError:
        return []  # no auth tables yet: no account at all
    found = []
    for account in accounts:
        name = account.get_username()
        if any(account.check_password(p) for p in (*DEFAULT_PASSWORDS, name)):
            found.append(name)
    return found


def admin_problem(names: Iterable[str]) -> str | None:
    names = sorted(set(names))
    if not names:
        return None
    return (
        f"a non-default admin password (accounts {', '.join(names)}: `manage.py changepassword`, "
        "or `apis up --create-admin` with APIS_ADMIN_PASSWORD)"
    )


def refusal(problems: Iterable[str], where: str) -> str:
    """The one line a refusal prints."""
    return (
        f"{where} is reachable from other machines, but public defaults are in effect: set "
        f"{', '.join(problems)} (they are for loopback only; see {DOCS})"
    )


def service_problems(*, admins: bool = True) -> list[str]:
    """What a running service (its settings loaded) still has as public defaults."""
    problems = env_problems(os.environ, getattr(settings, "SERVICE_NAME", None))
    if admins:
        problem = admin_problem(admins_with_default_passwords())
        if problem:
            problems.append(problem)
    return problems


# --- while public defaults are in effect: loopback clients only ------------------------------


def is_loopback_request(request: HttpRequest | None) -> bool:
    """A request from this machine: a loopback peer, or no network peer at all (no request:
    a shell, a command; no REMOTE_ADDR: an in-process WSGI call; an empty one: a unix socket).
    A request a proxy forwarded (its headers) is from elsewhere, wherever the proxy runs."""
    if request is None:
        return True
    meta = request.META
    if any(meta.get(header) for header in FORWARDING_HEADERS):
        return False
    address = meta.get("REMOTE_ADDR")
    return not address or is_loopback_address(address)
