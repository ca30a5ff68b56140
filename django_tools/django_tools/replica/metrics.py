"""The replica's metrics: what the consumer received, applied, retried and dead-lettered, its
batch times and the replication lag (summed across processes), and the queue depths the broker
reports at scrape time."""

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from django_tools.observability.metrics import LAG_BUCKETS, LATENCY_BUCKETS

EVENTS_CONSUMED = Counter("cqrs_events_consumed", "Messages received by the consumer")
EVENTS_APPLIED = Counter(
    "cqrs_events_applied",
    "Events handled by the replica, by outcome: applied, or ignored as duplicate, stale or "
    "deleted_before (a save older than the delete)",
    ["cqrs_id", "outcome"],
)
EVENTS_RETRIED = Counter("cqrs_events_retried", "Messages sent to a retry queue")
EVENTS_DEAD = Counter(
    "cqrs_events_dead_lettered", "Messages sent to the dead-letter queue", ["reason"]
)
APPLY_SECONDS = Histogram(
    "cqrs_apply_batch_seconds",
    "Time to apply one batch in one transaction",
    buckets=LATENCY_BUCKETS,
)
REPLICATION_LAG = Histogram(
    "cqrs_replication_lag_seconds",
    "Replica apply time minus the master's change time (cqrs_updated), per applied save",
    buckets=LAG_BUCKETS,
)
DEAD_LETTER_REPORTS = Counter(
    "cqrs_dead_letter_reports", "Dead-letter reports that found the dead-letter queue not empty"
)
DEAD_LETTERS_REPORTED = Gauge(
    "cqrs_dead_letters_reported",
    "Dead letters counted by the last dead-letter report",
    multiprocess_mode="mostrecent",
)


class ReplicaQueuesCollector(Collector):
    def collect(self):
        from django_tools.replica.models import ReplicaState
        from django_tools.replica.status import active_queue, broker_view, consumer_progress
        from django_tools.replica.topology import Topology

        topology = Topology.from_settings()
        view = broker_view(topology)
        up = GaugeMetricFamily("cqrs_broker_up", "1 when the broker answered the last scrape")
        up.add_metric([], 1 if view.reachable else 0)
        yield up
        last = ReplicaState.objects.order_by("-applied_at").first()
        progress = consumer_progress(active_queue(topology), view, last)
        stalled = GaugeMetricFamily(
            "cqrs_consumer_stalled",
            "1 when messages have waited in the replica's queue longer than CQRS_STALL_AFTER "
            "and nothing was applied",
        )
        stalled.add_metric([], 1 if progress.stalled else 0)
        yield stalled
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
            (
                "cqrs_queue_migrating",
                "Messages held in <queue>.migrating by an unfinished queue migration (absent "
                "when none is)",
                depths.migrating,
            ),
        ):
            if value is not None:
                gauge = GaugeMetricFamily(name, text)
                gauge.add_metric([], value)
                yield gauge
