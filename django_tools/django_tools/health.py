"""Health for people and for orchestrators.

- `GET /health/live`: the process answers; nothing else is checked (an orchestrator restarts a
  process that does not answer it).
- `GET /health/ready`: the service can serve its own requests: its database. Not the broker
  (the master writes to its outbox, the relay publishes later) nor Redis (the feed's cache
  falls back to the database). 200, or 503 naming the failing part (an orchestrator sends no
  traffic to a service that is not ready).
- `GET /health`: every dependency in detail (database, rabbitmq, redis: ok, error, ms). Status
  `ok` (200); `degraded` (200) when something is down that the service can serve without;
  `unavailable` (503) when a part it needs is down. `detail` names every failing part.

Every check is bounded in time: the checks run side by side, each in a thread of its own, and
one that has not answered by the deadline counts as failed — so the endpoint answers within a
few seconds even when the broker or the database is black-holed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from django.conf import settings
from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from django_tools.connectivity import probe_rabbitmq, probe_redis
from django_tools.env import scrub

HEALTH_TIMEOUT_SECONDS = 2.0
#: How long a check may take in all: its own timeout, and a margin for the thread.
DEADLINE_SECONDS = HEALTH_TIMEOUT_SECONDS + 1.0


def check_database() -> None:
    # Runs in a thread of its own: the connection is that thread's, closed afterwards.
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connections.close_all()


def check_rabbitmq() -> None:
    probe_rabbitmq(settings.RABBITMQ_URL, timeout=HEALTH_TIMEOUT_SECONDS)


def check_redis() -> None:
    probe_redis(settings.REDIS_URL, timeout=HEALTH_TIMEOUT_SECONDS)


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "rabbitmq": check_rabbitmq,
    "redis": check_redis,
}
#: What a service cannot serve its requests without (both services: their database only).
REQUIRED = ("database",)


def run_checks(names: Iterable[str] | None = None) -> dict[str, dict]:
    """`{name: {"ok": bool, "error"?: str, "ms": float}}` of the checks named (all by default),
    run side by side; none takes longer than `DEADLINE_SECONDS`."""
    names = list(CHECKS if names is None else names)
    results: dict[str, dict] = {}
    threads = []
    started = time.perf_counter()

    def run(name: str) -> None:
        began = time.perf_counter()
        try:
            CHECKS[name]()
        except Exception as exc:  # whatever breaks a part makes that part unhealthy
            # A public page: no URL credential or password fragment in what it says.
            error = str(exc) or exc.__class__.__name__
            result = {
                "ok": False,
                "error": scrub(error, [settings.RABBITMQ_URL, settings.REDIS_URL]),
            }
        else:
            result = {"ok": True}
        result["ms"] = round((time.perf_counter() - began) * 1000, 1)
        results[name] = result

    for name in names:
        thread = threading.Thread(target=run, args=(name,), name=f"health-{name}", daemon=True)
        thread.start()
        threads.append(thread)
    deadline = started + DEADLINE_SECONDS
    for thread in threads:
        thread.join(max(0.0, deadline - time.perf_counter()))
    answered = dict(results)  # a late check may still write into `results`
    return {
        name: answered.get(name)
        or {
            "ok": False,
            "error": f"no answer within {DEADLINE_SECONDS:g}s",
            "ms": round(DEADLINE_SECONDS * 1000, 1),
        }
        for name in names
    }


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
