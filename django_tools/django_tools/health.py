"""`GET /health`: 200 when the service can serve, 503 naming the failing part otherwise.

Every check is bounded in time (see `connectivity`), so the endpoint answers within a few
seconds even when the broker is black-holed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from django_tools.connectivity import probe_rabbitmq, probe_redis

HEALTH_TIMEOUT_SECONDS = 2.0


def check_database() -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")


def check_rabbitmq() -> None:
    probe_rabbitmq(settings.RABBITMQ_URL, timeout=HEALTH_TIMEOUT_SECONDS)


def check_redis() -> None:
    probe_redis(settings.REDIS_URL, timeout=HEALTH_TIMEOUT_SECONDS)


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "rabbitmq": check_rabbitmq,
    "redis": check_redis,
}


def run_checks() -> dict[str, dict]:
    results = {}
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            check()
        except Exception as exc:  # whatever breaks a part makes that part unhealthy
            results[name] = {"ok": False, "error": str(exc) or exc.__class__.__name__}
        else:
            results[name] = {"ok": True}
        results[name]["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return results


@require_GET
def health_view(request: HttpRequest) -> JsonResponse:
    checks = run_checks()
    failing = [name for name, result in checks.items() if not result["ok"]]
    body: dict = {
        "status": "ok" if not failing else "unavailable",
        "service": settings.SERVICE_NAME,
        "checks": checks,
    }
    if failing:
        body["detail"] = "; ".join(f"{name}: {checks[name]['error']}" for name in failing)
    return JsonResponse(body, status=503 if failing else 200)
