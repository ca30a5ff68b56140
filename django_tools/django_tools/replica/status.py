"""How the replica is doing: queue depth, dead letters, scheduled retries, last applied event and
an estimate of the lag. The broker is asked over AMQP (passive declares) in a thread with a
deadline: a slow or dead broker makes the answer say "unreachable", never hang."""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.utils import timezone
from pika.adapters.utils.connection_workflow import AMQPConnectorException
from pika.exceptions import AMQPError, ChannelClosedByBroker

from django_tools.broker import blocking_connection
from django_tools.env import scrub
from django_tools.replica.models import ReplicaState
from django_tools.replica.topology import Topology

BROKER_TIMEOUT = 2.0
_executor = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="amqp-status")


@dataclass(frozen=True)
class QueueDepths:
    queue: int | None
    consumers: int | None
    dead_letters: int | None
    retries_scheduled: int | None


@dataclass(frozen=True)
class BrokerView:
    reachable: bool
    error: str | None
    depths: QueueDepths


def _depths(url: str, topology: Topology, queue: str) -> QueueDepths:
    connection = blocking_connection(
        url,
        socket_timeout=BROKER_TIMEOUT,
        stack_timeout=BROKER_TIMEOUT,
        blocked_connection_timeout=BROKER_TIMEOUT,
    )
    try:
        channel = connection.channel()

        def declare(name: str):
            nonlocal channel
            try:
                return channel.queue_declare(name, passive=True).method
            except ChannelClosedByBroker:  # 404: not declared yet
                channel = connection.channel()
                return None

        main = declare(queue)
        dead = declare(topology.dead_letter_queue)
        tiers = [declare(topology.retry_queue(t)) for t in topology.policy.tiers()]
        return QueueDepths(
            queue=main.message_count if main else None,
            consumers=main.consumer_count if main else None,
            dead_letters=dead.message_count if dead else None,
            retries_scheduled=sum(t.message_count for t in tiers if t),
        )
    finally:
        if connection.is_open:
            connection.close()


def active_queue(topology: Topology) -> str:
    """Where changes wait: the replica's django-cqrs queue, or in REPLICATION_MODE=celery the
    replica's Celery queue (whose retries wait in the worker, not in retry queues)."""
    if settings.REPLICATION_MODE == "celery":
        return settings.CELERY_TASK_DEFAULT_QUEUE
    return topology.queue


def broker_view(topology: Topology | None = None) -> BrokerView:
    topology = topology or Topology.from_settings()
    future = _executor.submit(_depths, settings.CQRS["url"], topology, active_queue(topology))
    try:
        return BrokerView(True, None, future.result(timeout=BROKER_TIMEOUT + 0.5))
    except concurrent.futures.TimeoutError:
        error = f"no answer within {BROKER_TIMEOUT + 0.5:.1f}s"
    except (AMQPError, AMQPConnectorException, OSError, ValueError) as exc:
        # ValueError: a RABBITMQ_URL pika cannot parse (a password with `/`, `?`, `#`), whose
        # message quotes part of the password: scrubbed like every error shown here.
        error = scrub(str(exc) or type(exc).__name__, [settings.CQRS["url"]])
    return BrokerView(False, error, QueueDepths(None, None, None, None))


@dataclass(frozen=True)
class ReplicationStatus:
    queue: str
    dead_letter_queue: str
    broker: BrokerView
    last_applied: ReplicaState | None
    estimated_lag_seconds: float | None

    @property
    def last_applied_delay_ms(self) -> float | None:
        state = self.last_applied
        if state is None or state.master_updated_at is None:
            return None
        return (state.applied_at - state.master_updated_at).total_seconds() * 1000


def replication_status(cqrs_id: str | None = None) -> ReplicationStatus:
    topology = Topology.from_settings()
    broker = broker_view(topology)
    states = ReplicaState.objects.order_by("-applied_at")
    last = (states.filter(cqrs_id=cqrs_id) if cqrs_id else states).first()
    return ReplicationStatus(
        queue=active_queue(topology),
        dead_letter_queue=topology.dead_letter_queue,
        broker=broker,
        last_applied=last,
        estimated_lag_seconds=_estimated_lag(broker, last, timezone.now()),
    )


def _estimated_lag(broker: BrokerView, last: ReplicaState | None, now: datetime) -> float | None:
    """Nothing waiting: 0. Messages waiting: the age of the master change the replica shows
    last — how far behind the master it is, at least. Unknown when the broker is not
    answering or nothing was applied yet."""
    if not broker.reachable:
        return None
    waiting = (broker.depths.queue or 0) + (broker.depths.retries_scheduled or 0)
    if waiting == 0:
        return 0.0
    if last is None or last.master_updated_at is None:
        return None
    return max(0.0, (now - last.master_updated_at).total_seconds())
