"""The replica's metrics: what the consumer received, applied, retried and dead-lettered, its
batch times and the replication lag (summed across processes), and the queue depths the broker
reports and the consumer's heartbeats at scrape time.

Dead-letter names are `cqrs_dead_letter_*`; the first release's `cqrs_dead_letters` and
`cqrs_dead_letters_reported` are still exported beside their new names, deprecated
(CQRS.md#métricas): gone in the next release."""

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

from django_tools.observability.metrics import LAG_BUCKETS, LATENCY_BUCKETS, GaugeCollector

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
DEAD_LETTER_REPORT_MESSAGES = Gauge(
    "cqrs_dead_letter_report_messages",
    "Dead letters counted by the last dead-letter report",
    multiprocess_mode="mostrecent",
)
DEAD_LETTERS_REPORTED_DEPRECATED = Gauge(
    "cqrs_dead_letters_reported",
    "Deprecated: cqrs_dead_letter_report_messages",
    multiprocess_mode="mostrecent",
)


class ReplicaQueuesCollector(GaugeCollector):
    GAUGES = {
        "cqrs_broker_up": "1 when the broker answered the last scrape",
        "cqrs_consumer_stalled": "1 when messages have waited in the replica's queue longer "
        "than CQRS_STALL_AFTER and nothing was applied",
        "cqrs_queue_depth": "Messages waiting in the replica's queue",
        "cqrs_queue_consumers": "Consumers attached to the replica's queue",
        "cqrs_dead_letter_messages": "Messages in the dead-letter queue",
        "cqrs_dead_letters": "Deprecated: cqrs_dead_letter_messages",
        "cqrs_retries_scheduled": "Messages waiting in retry queues",
        "cqrs_queue_migrating": "Messages held in <queue>.migrating by an unfinished queue "
        "migration (absent when none is)",
    }

    def collect(self):
        from django_tools.replica.models import ReplicaState
        from django_tools.replica.status import active_queue, broker_view, consumer_progress
        from django_tools.replica.topology import Topology

        topology = Topology.from_settings()
        view = broker_view(topology)
        yield self.gauge("cqrs_broker_up", 1 if view.reachable else 0)
        last = ReplicaState.objects.order_by("-applied_at").first()
        progress = consumer_progress(active_queue(topology), view, last)
        yield self.gauge("cqrs_consumer_stalled", 1 if progress.stalled else 0)
        if not view.reachable:
            return
        depths = view.depths
        for name, value in (
            ("cqrs_queue_depth", depths.queue),
            ("cqrs_queue_consumers", depths.consumers),
            ("cqrs_dead_letter_messages", depths.dead_letters),
            ("cqrs_dead_letters", depths.dead_letters),
            ("cqrs_retries_scheduled", depths.retries_scheduled),
            ("cqrs_queue_migrating", depths.migrating),
        ):
            if value is not None:
                yield self.gauge(name, value)


#: The states a consumer worker's heartbeat says (`django_tools.replica.consumer`), always
#: exported (0 when no worker is in it), and `stale`: alive but silent past
#: HEARTBEAT_STALE_AFTER (paused or hung; `cqrs_consume` kills and replaces it).
WORKER_STATES = ("consuming", "connecting", "reconnecting", "stale")


class ConsumerHeartbeatCollector(GaugeCollector):
    """What `cqrs_consume_health` reads, as gauges: the heartbeat files of the consumer
    workers and of their supervising `cqrs_consume` parents (the same HEARTBEAT_DIR; `apis up`
    runs the consumer beside the web workers)."""

    GAUGES = {
        "cqrs_consumer_heartbeat_age_seconds": "Seconds since the freshest heartbeat of a live "
        "consumer worker (absent when no worker has one)",
        "cqrs_consumer_worker_deaths": "Consumer workers that died in the last minute, as "
        "their cqrs_consume parents count them",
        "cqrs_consumer_restart_backoff_seconds": "How long a cqrs_consume parent waits before "
        "starting a worker again (0 unless workers keep dying)",
    }
    WORKERS = ("cqrs_consumer_workers", "Live consumer workers by the state of their heartbeat")

    def describe(self):
        return [*super().describe(), GaugeMetricFamily(*self.WORKERS, labels=["state"])]

    def collect(self):
        from django_tools import heartbeat

        directory = heartbeat.heartbeat_dir()
        stale_after = heartbeat.stale_after()
        live = [pulse for pulse in heartbeat.read_consumers(directory) if pulse.alive()]
        counts = dict.fromkeys(WORKER_STATES, 0)
        for pulse in live:
            state = "stale" if pulse.age > stale_after else pulse.state
            counts[state] = counts.get(state, 0) + 1
        workers = GaugeMetricFamily(*self.WORKERS, labels=["state"])
        for state, count in counts.items():
            workers.add_metric([state], count)
        yield workers
        if live:
            yield self.gauge(
                "cqrs_consumer_heartbeat_age_seconds", min(pulse.age for pulse in live)
            )
        supervisors = heartbeat.read_supervisors(directory)
        deaths = sum(int(pulse.get("deaths") or 0) for pulse in supervisors)
        waits = [float(pulse.get("restart_in") or 0) for pulse in supervisors]
        yield self.gauge("cqrs_consumer_worker_deaths", deaths)
        yield self.gauge("cqrs_consumer_restart_backoff_seconds", max(waits, default=0.0))
