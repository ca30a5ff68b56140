"""Prometheus plumbing of both services (prometheus-client): the `/metrics` view, the HTTP
metrics, and the registry of scrape-time collectors. The outbox's and the replica's own metrics
live in `outbox/metrics.py` and `replica/metrics.py`.

Under `apis up` every process of a service (gunicorn workers, the relay, the consumer) writes its
samples to the service's `PROMETHEUS_MULTIPROC_DIR`, and `/metrics` adds them up, so counters
are right whatever worker answers the scrape. Without that variable (runserver, tests) a process
reports its own samples. Gauges that describe shared state (the outbox backlog, queue depths)
are computed when scraped, by collectors the apps register.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)

HTTP_REQUESTS = Counter(
    "http_requests", "HTTP requests by route and status", ["method", "route", "status"]
)
HTTP_SECONDS = Histogram(
    "http_request_duration_seconds", "HTTP request time", ["method", "route"],
    buckets=LATENCY_BUCKETS,
)  # fmt: skip

_scrape_time: list[Callable[[], Collector]] = []


def register_scrape_collector(factory: Callable[[], Collector]) -> None:
    """A collector built at every scrape, for gauges read from shared state (DB, broker)."""
    _scrape_time.append(factory)


class _ProcessRegistry(Collector):
    def collect(self) -> Iterable:
        return REGISTRY.collect()


def metrics_view(request: HttpRequest) -> HttpResponse:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ProcessRegistry())
    for factory in _scrape_time:
        registry.register(factory())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


#: Methods counted by name; any other token (gunicorn accepts any uppercase word as a method)
#: is counted as "other", or each made-up method would add time series for ever.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpMetricsMiddleware:
    """Counts and times every request by its URL pattern (not its raw path, which would make
    a time series per product id) and its method (one of `HTTP_METHODS`, else "other"): the
    label values are bounded whatever clients send."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = request.resolver_match
        route = match.route if match is not None else "unmatched"
        method = request.method if request.method in HTTP_METHODS else "other"
        HTTP_REQUESTS.labels(method, route, str(response.status_code)).inc()
        HTTP_SECONDS.labels(method, route).observe(time.perf_counter() - started)
        return response
