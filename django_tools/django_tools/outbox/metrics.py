"""The master's metrics: events written to the outbox and published (counters, summed across
processes), and the backlog read from the database at scrape time."""

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

OUTBOX_WRITTEN = Counter(
    "cqrs_outbox_events_written", "Events written to the outbox", ["cqrs_id", "signal_type"]
)
OUTBOX_PUBLISHED = Counter(
    "cqrs_outbox_events_published", "Outbox events the broker confirmed (relay)"
)


class OutboxBacklogCollector(Collector):
    def collect(self):
        from django_tools.outbox.progress import relay_progress

        progress = relay_progress()
        backlog = progress.backlog
        stalled = GaugeMetricFamily(
            "cqrs_outbox_stalled",
            "1 when outbox rows have waited longer than CQRS_STALL_AFTER and nothing was published",
        )
        stalled.add_metric([], 1 if progress.stalled else 0)
        yield stalled
        pending = GaugeMetricFamily("cqrs_outbox_backlog", "Outbox events not yet published")
        pending.add_metric([], backlog.count)
        age = GaugeMetricFamily(
            "cqrs_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox event"
        )
        age.add_metric([], backlog.oldest_age_seconds)
        yield pending
        yield age
        if backlog.last_published_at is not None:
            last = GaugeMetricFamily(
                "cqrs_outbox_last_published_timestamp_seconds",
                "When the broker last confirmed an outbox event",
            )
            last.add_metric([], backlog.last_published_at.timestamp())
            yield last
