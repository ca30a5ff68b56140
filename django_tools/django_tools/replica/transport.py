"""django-cqrs transport of the replica: `manage.py cqrs_consume` runs `consume()` in each of
its worker processes."""

from __future__ import annotations

import os
import signal
import threading

from dj_cqrs.transport.rabbit_mq import RabbitMQTransport
from django.conf import settings


class ReliableRabbitMQTransport(RabbitMQTransport):
    """django-cqrs's RabbitMQ transport with the reliable consumer of `django_tools.replica`:
    exponential backoff on the broker, dead letters with reasons, tombstones, batches.
    Publishing (`produce`) is django-cqrs's own."""

    @classmethod
    def consume(cls, cqrs_ids=None):
        # Imported here: django-cqrs imports the transport while Django's apps are loading.
        from django_tools import amqp_properties
        from django_tools.heartbeat import Heartbeat, consumer_file, heartbeat_dir, prune_consumers
        from django_tools.replica.consumer import Consumer
        from django_tools.replica.messages import max_message_bytes
        from django_tools.replica.topology import Topology

        # A message whose headers pika cannot decode must reach the consumer (and the
        # dead-letter queue) instead of breaking the connection it arrives on: this worker's
        # pika decodes properties tolerantly (and refuses to start on a pika it does not know).
        amqp_properties.install()
        stop = threading.Event()
        if threading.current_thread() is threading.main_thread():
            # cqrs_consume stops its workers with SIGINT: finish the batch in hand, then leave.
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            _stop_when_orphaned(stop)
        # Each worker process writes its heartbeat for `cqrs_consume_health`.
        prune_consumers(heartbeat_dir())
        heartbeat = Heartbeat(heartbeat_dir() / consumer_file())
        prefetch, batch_size = worker_limits(
            settings.CQRS["replica"], max_message_bytes=max_message_bytes()
        )
        consumer = Consumer(
            Topology.from_settings(tuple(cqrs_ids) if cqrs_ids else None),
            settings.CQRS["url"],
            prefetch=prefetch,
            batch_size=batch_size,
            stop=stop,
            heartbeat=heartbeat,
        )
        try:
            consumer.run()
        finally:
            heartbeat.remove()


def worker_limits(replica: dict, *, max_message_bytes: int) -> tuple[int, int]:
    """(prefetch count, batch size) of a consumer worker, from CQRS['replica']: CQRS_PREFETCH
    and CQRS_BATCH_SIZE, cut to hold at most CQRS_PREFETCH_BYTES, and to django-cqrs's own
    prefetch (delay_queue_max_size + 1) when the service set delay_queue_max_size."""
    from django_tools import limits
    from django_tools.replica.stock_retry import prefetch_cap

    prefetch = int(replica["prefetch"])
    prefetch = min(prefetch, prefetch_cap(replica) or prefetch)
    return limits.prefetch_within(
        prefetch,
        int(replica["batch_size"]),
        prefetch_bytes=int(replica.get("prefetch_bytes", limits.PREFETCH_BYTES)),
        max_message_bytes=max_message_bytes,
    )


#: Set by `cqrs_consume` to its own pid before it starts its workers.
PARENT_PID_ENV = "CQRS_CONSUME_PARENT_PID"


def _stop_when_orphaned(stop: threading.Event, every: float = 1.0) -> None:
    """A worker of `cqrs_consume` whose parent died (`kill -9`) stops too: the parent's
    replacement starts workers of its own, and an orphan would go on consuming unsupervised."""
    # The pid the supervising parent wrote before starting us: reading our own parent pid here
    # would be too late when the parent died while this worker was still starting.
    parent = int(os.environ.get(PARENT_PID_ENV) or os.getppid())

    def watch() -> None:
        while os.getppid() == parent:
            if stop.wait(every):
                return
        stop.set()

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()
