"""The master's metrics: events written to the outbox and published (counters, summed across
processes), the backlog read from the database at scrape time, and the relay's heartbeat read
from its file at scrape time."""

from prometheus_client import Counter

from django_tools.observability.metrics import GaugeCollector

OUTBOX_WRITTEN = Counter(
    "cqrs_outbox_events_written", "Events written to the outbox", ["cqrs_id", "signal_type"]
)
OUTBOX_PUBLISHED = Counter(
    "cqrs_outbox_events_published", "Outbox events the broker confirmed (relay)"
)


class OutboxBacklogCollector(GaugeCollector):
    GAUGES = {
        "cqrs_outbox_stalled": "1 when outbox rows have waited longer than CQRS_STALL_AFTER "
        "and nothing was published",
        "cqrs_outbox_backlog": "Outbox events not yet published",
        "cqrs_outbox_oldest_age_seconds": "Age of the oldest unpublished outbox event",
        "cqrs_outbox_last_published_timestamp_seconds": "When the broker last confirmed an "
        "outbox event",
    }

    def collect(self):
        from django_tools.outbox.progress import relay_progress

        progress = relay_progress()
        backlog = progress.backlog
        yield self.gauge("cqrs_outbox_stalled", 1 if progress.stalled else 0)
        yield self.gauge("cqrs_outbox_backlog", backlog.count)
        yield self.gauge("cqrs_outbox_oldest_age_seconds", backlog.oldest_age_seconds)
        if backlog.last_published_at is not None:
            yield self.gauge(
                "cqrs_outbox_last_published_timestamp_seconds",
                backlog.last_published_at.timestamp(),
            )


class RelayHeartbeatCollector(GaugeCollector):
    """What `outbox_relay_health` reads, as gauges: the relay's heartbeat file (the same
    HEARTBEAT_DIR; `apis up` runs the relay beside the web workers)."""

    GAUGES = {
        "cqrs_relay_up": "1 when the relay's heartbeat is fresh (HEARTBEAT_STALE_AFTER) and "
        "from a live process",
        "cqrs_relay_heartbeat_age_seconds": "Seconds since the relay last wrote its heartbeat "
        "(absent when it has none: never started, or stopped on purpose)",
        "cqrs_relay_blocked": "1 while the broker blocks the relay's publishing "
        "(connection.blocked: a disk or memory alarm on the broker)",
    }

    def collect(self):
        from django_tools import heartbeat

        pulse = heartbeat.read(heartbeat.heartbeat_dir() / heartbeat.RELAY_FILE)
        alive = pulse is not None and pulse.alive()
        fresh = alive and pulse.age <= heartbeat.stale_after()
        yield self.gauge("cqrs_relay_up", 1 if fresh else 0)
        yield self.gauge("cqrs_relay_blocked", 1 if fresh and pulse.state == "blocked" else 0)
        if pulse is not None:
            yield self.gauge("cqrs_relay_heartbeat_age_seconds", pulse.age)
