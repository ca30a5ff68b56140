"""Health for people and for orchestrators.

- `GET /health/live`: the process answers; nothing else is checked (an orchestrator restarts a
  process that does not answer it).
- `GET /health/ready`: the service can serve its own requests: its database. Not the broker
  (the master writes to its outbox, the relay publishes later) nor Redis (a cache in front of
  the database falls back to it). 200, or 503 naming the failing part (an orchestrator sends no
  traffic to a service that is not ready).
- `GET /health`: every dependency in detail (database, rabbitmq, redis: ok, error, ms) and the
  progress of replication where the service has it: `relay` on a master (the outbox app: rows
  waiting and nothing published for CQRS_STALL_AFTER), `consumer` on a replica (messages ready
  and nothing applied for CQRS_STALL_AFTER). Status `ok` (200); `degraded` (200) when something
  is down or stalled that the service can serve without; `unavailable` (503) when a part it
  needs is down. `detail` names every failing part.

Every check is bounded in time and costs no connection of its own: each runs on its
dependency's prober (`connectivity.Prober`: one thread and one kept connection per process;
an answer less than a second old is reused; a check already running is waited for, not run
again), and one that has not answered by the deadline counts as failed. So the endpoint
answers within a few seconds even when the broker or the database is black-holed, and calling
it in a loop piles nothing up.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable

from django.apps import apps
from django.conf import settings
from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from django_tools.connectivity import (
    BROKER,
    DATABASE,
    REDIS,
    REPLICA,
    Busy,
    NoAnswer,
    Prober,
    on_broker,
    ping,
    ping_redis,
    wait_for,
)
from django_tools.env import scrub

#: A probe's own budget (connecting included: the nodes of RABBITMQ_URL share it).
HEALTH_TIMEOUT_SECONDS = 2.0
#: How long a request waits for its checks: the probes' budget, and a margin.
DEADLINE_SECONDS = HEALTH_TIMEOUT_SECONDS + 1.0


class Stalled(Exception):
    """Work waits and nothing moves (the relay's or the consumer's progress)."""


def check_database() -> None:
    # Runs in the database prober's thread: its connection is kept, closed when unusable.
    connection = connections["default"]
    connection.close_if_unusable_or_obsolete()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        connection.close()
        raise


def check_rabbitmq() -> None:
    on_broker(settings.RABBITMQ_URL, ping, HEALTH_TIMEOUT_SECONDS)


def check_redis() -> None:
    ping_redis(settings.REDIS_URL, HEALTH_TIMEOUT_SECONDS)


def check_relay() -> None:
    """The master's outbox moves (whichever relay publishes it)."""
    from django_tools.outbox.progress import relay_progress

    try:
        progress = relay_progress()
    except Exception:
        connections["default"].close()
        raise
    if progress.stalled:
        raise Stalled(progress.detail)


def check_consumer() -> None:
    """The replica's consumer applies what waits in its queue. Unknown (the broker does not
    answer: the `rabbitmq` check says so) counts as fine here."""
    from django_tools.replica.models import ReplicaState
    from django_tools.replica.status import active_queue, broker_view, consumer_progress
    from django_tools.replica.topology import Topology

    topology = Topology.from_settings()
    broker = broker_view(topology)
    try:
        last = ReplicaState.objects.order_by("-applied_at").first()
    except Exception:
        connections["default"].close()
        raise
    progress = consumer_progress(active_queue(topology), broker, last)
    if progress.stalled:
        raise Stalled(progress.detail)


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "rabbitmq": check_rabbitmq,
    "redis": check_redis,
}
#: Checks of replication, where the service has the app.
PROGRESS_CHECKS: dict[str, tuple[str, Callable[[], None]]] = {
    "relay": ("django_tools.outbox", check_relay),
    "consumer": ("django_tools.replica", check_consumer),
}
#: What a service cannot serve its requests without (both services: their database only).
REQUIRED = ("database",)
#: The prober each check runs on: its dependency's (`consumer` has its own: it waits for the
#: broker's prober, then reads the database).
PROBERS: dict[str, Prober] = {
    "database": DATABASE,
    "rabbitmq": BROKER,
    "redis": REDIS,
    "relay": DATABASE,
    "consumer": REPLICA,
}
_other_probers: dict[str, Prober] = {}


def checks() -> dict[str, Callable[[], None]]:
    """The checks of this service: CHECKS, then the progress of its replication apps."""
    found = dict(CHECKS)
    for name, (app, check) in PROGRESS_CHECKS.items():
        if apps.is_installed(app):
            found[name] = check
    return found


def _prober(name: str) -> Prober:
    if name in PROBERS:
        return PROBERS[name]
    return _other_probers.setdefault(name, Prober(name))


def _key(name: str, check: Callable[[], None]) -> str:
    """What makes two asks the same probe: the check, and where it looks."""
    where = {"rabbitmq": settings.RABBITMQ_URL, "redis": settings.REDIS_URL}.get(name, "")
    return f"{name}:{id(check)}:{where}"


def run_checks(names: Iterable[str] | None = None) -> dict[str, dict]:
    """`{name: {"ok": bool, "error"?: str, "ms": float}}` of the checks named (all by default),
    run side by side on their probers; the answer takes at most `DEADLINE_SECONDS`."""
    available = checks()
    names = list(available if names is None else names)
    deadline = time.monotonic() + DEADLINE_SECONDS
    flights = {
        name: _prober(name).submit(_key(name, available[name]), available[name]) for name in names
    }
    results: dict[str, dict] = {}
    for name, flight in flights.items():
        try:
            wait_for(flight, max(0.0, deadline - time.monotonic()))
        except Busy as exc:  # stuck since an earlier request: said at once
            result = {"ok": False, "error": str(exc)}
        except NoAnswer:
            result = {"ok": False, "error": f"no answer within {DEADLINE_SECONDS:g}s"}
        except Exception as exc:  # whatever breaks a part makes that part unhealthy
            # A public page: no URL credential or password fragment in what it says.
            error = str(exc) or exc.__class__.__name__
            result = {
                "ok": False,
                "error": scrub(error, [settings.RABBITMQ_URL, settings.REDIS_URL]),
            }
        else:
            result = {"ok": True}
        took = DEADLINE_SECONDS if flight.finished is None else flight.finished - flight.started
        result["ms"] = round(min(took, DEADLINE_SECONDS) * 1000, 1)
        results[name] = result
    return results


def close_probes() -> None:
    """Close the connections the probes keep in this process (tests, before their databases go)."""
    from django_tools.connectivity import Unreachable, close_shared

    with contextlib.suppress(Unreachable):  # a prober still stuck keeps its connection
        for prober in (DATABASE, REPLICA):
            if prober.started:
                prober.ask("close", connections.close_all, timeout=5, fresh_for=0)
        if BROKER.started:
            BROKER.ask("close", close_shared, timeout=5, fresh_for=0)
        else:
            close_shared()


def _failing(checks: dict[str, dict]) -> list[str]:
    return [name for name, result in checks.items() if not result["ok"]]


def _detail(checks: dict[str, dict], names: list[str]) -> str:
    return "; ".join(f"{name}: {checks[name]['error']}" for name in names)


@require_GET
def health_view(request: HttpRequest) -> JsonResponse:
    checks = run_checks()
    failing = _failing(checks)
    unavailable = [name for name in failing if name in REQUIRED]
    status = "unavailable" if unavailable else "degraded" if failing else "ok"
    body: dict = {"status": status, "service": settings.SERVICE_NAME, "checks": checks}
    if failing:
        # The parts the service cannot do without first: they are why it is unavailable.
        body["detail"] = _detail(checks, unavailable + [n for n in failing if n not in REQUIRED])
    return JsonResponse(body, status=503 if unavailable else 200)


@require_GET
def live_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok", "service": settings.SERVICE_NAME})


@require_GET
def ready_view(request: HttpRequest) -> JsonResponse:
    checks = run_checks(REQUIRED)
    failing = _failing(checks)
    body: dict = {
        "status": "unavailable" if failing else "ok",
        "service": settings.SERVICE_NAME,
        "checks": checks,
    }
    if failing:
        body["detail"] = _detail(checks, failing)
    return JsonResponse(body, status=503 if failing else 200)
