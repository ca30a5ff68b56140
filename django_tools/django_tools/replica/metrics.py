"""Scrape-time gauges of the replica: queue depths as the broker reports them."""

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from django_tools.replica.status import broker_view


class ReplicaQueuesCollector(Collector):
    def collect(self):
        view = broker_view()
        up = GaugeMetricFamily("cqrs_broker_up", "1 when the broker answered the last scrape")
        up.add_metric([], 1 if view.reachable else 0)
        yield up
        if not view.reachable:
            return
        depths = view.depths
        for name, text, value in (
            ("cqrs_queue_depth", "Messages waiting in the replica's queue", depths.queue),
            ("cqrs_queue_consumers", "Consumers attached to the replica's queue", depths.consumers),
            ("cqrs_dead_letters", "Messages in the dead-letter queue", depths.dead_letters),
            (
                "cqrs_retries_scheduled",
                "Messages waiting in retry queues",
                depths.retries_scheduled,
            ),
        ):
            if value is not None:
                gauge = GaugeMetricFamily(name, text)
                gauge.add_metric([], value)
                yield gauge
