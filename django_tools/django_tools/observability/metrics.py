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
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)

#: Names: `apis_*` for what every service measures of itself (HTTP), `cqrs_*` for replication
#: (the outbox, the relay, the consumer, the broker's queues). The unprefixed HTTP names of the
#: first release are still exported, deprecated (CQRS.md#métricas): gone in the next one.
HTTP_REQUESTS = Counter(
    "apis_http_requests", "HTTP requests by route and status", ["method", "route", "status"]
)
HTTP_SECONDS = Histogram(
    "apis_http_request_duration_seconds", "HTTP request time", ["method", "route"],
    buckets=LATENCY_BUCKETS,
)  # fmt: skip
HTTP_REQUESTS_DEPRECATED = Counter(
    "http_requests", "Deprecated: apis_http_requests_total", ["method", "route", "status"]
)
HTTP_SECONDS_DEPRECATED = Histogram(
    "http_request_duration_seconds", "Deprecated: apis_http_request_duration_seconds",
    ["method", "route"], buckets=LATENCY_BUCKETS,
)  # fmt: skip

_scrape_time: list[Callable[[], Collector]] = []


def register_scrape_collector(factory: Callable[[], Collector]) -> None:
    """A collector built at every scrape, for gauges read from shared state (DB, broker)."""
    _scrape_time.append(factory)


class GaugeCollector(Collector):
    """A scrape-time collector of unlabelled gauges named in `GAUGES` ({name: help}).
    `describe()` lists them without reading anything, so the names are known without a
    database or a broker (the monitoring files are checked against them)."""

    GAUGES: dict[str, str] = {}

    def describe(self):
        return [GaugeMetricFamily(name, text) for name, text in self.GAUGES.items()]

    def gauge(self, name: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, self.GAUGES[name])
        family.add_metric([], value)
        return family


def sample_names(family) -> set[str]:
    """The names of the samples a metric family can expose (a counter `x` as `x_total`, …)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created"),
        "gauge": ("",),
    }.get(family.type, ("",))
    return {family.name + suffix for suffix in suffixes}


def exported_metric_names(collectors: Iterable[Collector] = ()) -> set[str]:
    """Every sample name `/metrics` can show: the process registry's metrics (whatever their
    labels), and what `collectors` (scrape-time ones; by default the registered ones) describe.
    What the alerting rules and the dashboard in monitoring/ are checked against."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        names |= sample_names(family)
    for collector in collectors or [factory() for factory in _scrape_time]:
        for family in collector.describe():
            names |= sample_names(family)
    return names


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
        elapsed = time.perf_counter() - started
        for requests, seconds in (
            (HTTP_REQUESTS, HTTP_SECONDS),
            (HTTP_REQUESTS_DEPRECATED, HTTP_SECONDS_DEPRECATED),
        ):
            requests.labels(method, route, str(response.status_code)).inc()
            seconds.labels(method, route).observe(elapsed)
        return response
