"""How the replica is doing: queue depth, dead letters, scheduled retries, last applied event, an
estimate of the lag, and whether the consumer makes progress. The broker is asked over AMQP
(passive declares) by this process's broker prober (`connectivity.BROKER`: one connection kept,
one question of each kind at a time, answers a second old given again) within a deadline: a
slow or dead broker makes the answer say "unreachable", never hang, and nobody asking often
piles work up or opens connections.

The consumer is stalled (`consumer_progress`) when messages have been waiting in its queue for
CQRS_STALL_AFTER seconds (as seen by this process, asking now and then) and nothing was applied
in that time: no worker consuming, or workers paused, hung or cut from the broker.

A queue migration (`cqrs_queues migrate`) in progress or interrupted holds messages in
`<queue>.migrating` (and retries in `<tier>.migrating`): they are waiting like the queue's own, so
they count as lag and toward a stall — a migration left unfinished is a replica behind."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.utils import timezone
from pika.exceptions import ChannelClosedByBroker

from django_tools.conf import setting
from django_tools.connectivity import BROKER, BrokerLink, Unreachable, on_broker
from django_tools.replica.models import ReplicaState
from django_tools.replica.topology import Topology

BROKER_TIMEOUT = 2.0
DEFAULT_STALL_AFTER = 20.0


@dataclass(frozen=True)
class QueueDepths:
    queue: int | None
    consumers: int | None
    dead_letters: int | None
    retries_scheduled: int | None
    #: Messages held in `<queue>.migrating` by a queue migration; None when there is none.
    migrating: int | None = None

    @property
    def waiting(self) -> int:
        """Messages ready for the replica, wherever they wait: its queue and the holding queue
        of a migration."""
        return (self.queue or 0) + (self.migrating or 0)


@dataclass(frozen=True)
class BrokerView:
    reachable: bool
    error: str | None
    depths: QueueDepths


def _depths(link: BrokerLink, topology: Topology, queue: str) -> QueueDepths:
    def declare(name: str):
        try:
            return link.channel().queue_declare(name, passive=True).method
        except ChannelClosedByBroker:  # 404: not declared yet (the next call opens a channel)
            return None

    main = declare(queue)
    dead = declare(topology.dead_letter_queue)
    tier_queues = [topology.retry_queue(t) for t in topology.policy.tiers()]
    tiers = [declare(name) for name in tier_queues]
    # A migration declares `<queue>.migrating` first and deletes it last: only then can the
    # tiers' holding queues exist, so one declare is all an ordinary status costs.
    held = declare(Topology.migrating(queue)) if queue == topology.queue else None
    if held is not None:
        tiers += [declare(Topology.migrating(name)) for name in tier_queues]
    return QueueDepths(
        queue=main.message_count if main else None,
        consumers=main.consumer_count if main else None,
        dead_letters=dead.message_count if dead else None,
        retries_scheduled=sum(t.message_count for t in tiers if t),
        migrating=held.message_count if held else None,
    )


def active_queue(topology: Topology) -> str:
    """Where changes wait: the replica's django-cqrs queue, or in REPLICATION_MODE=celery the
    replica's Celery queue (whose retries wait in the worker, not in retry queues)."""
    if setting("REPLICATION_MODE") == "celery":
        return setting("CELERY_TASK_DEFAULT_QUEUE")
    return topology.queue


def broker_view(topology: Topology | None = None, fresh_for: float = 1.0) -> BrokerView:
    """The broker's view of the replica's queues; an answer up to `fresh_for` seconds old (asked
    by another request of this process) will do."""
    topology = topology or Topology.from_settings()
    url, queue = settings.CQRS["url"], active_queue(topology)

    def ask() -> QueueDepths:
        return on_broker(url, lambda link: _depths(link, topology, queue), BROKER_TIMEOUT)

    try:
        depths = BROKER.ask(
            f"depths:{url}:{queue}", ask, timeout=BROKER_TIMEOUT + 0.5, fresh_for=fresh_for
        )
    except Unreachable as exc:
        return BrokerView(False, str(exc), QueueDepths(None, None, None, None))
    _observe(queue, depths)
    return BrokerView(True, None, depths)


# --- is the consumer making progress? ------------------------------------------------------

_waiting_since: dict[str, float] = {}  # queue → when this process first saw messages waiting
_waiting_lock = threading.Lock()


def _observe(queue: str, depths: QueueDepths) -> None:
    with _waiting_lock:
        if depths.waiting:
            _waiting_since.setdefault(queue, time.time())
        else:
            _waiting_since.pop(queue, None)


def stall_after() -> float:
    return float(getattr(settings, "CQRS_STALL_AFTER", DEFAULT_STALL_AFTER))


@dataclass(frozen=True)
class ConsumerProgress:
    stalled: bool
    detail: str | None
    #: Seconds since the replica applied something, None when never.
    last_applied_age_seconds: float | None
    stall_after: float


def consumer_progress(
    queue: str, broker: BrokerView, last: ReplicaState | None, now: datetime | None = None
) -> ConsumerProgress:
    """Stalled: messages ready in the queue since at least `stall_after` seconds ago (this
    process saw them waiting then, and every time it asked since) and nothing applied since."""
    limit = stall_after()
    now = now or timezone.now()
    age = None if last is None else max(0.0, (now - last.applied_at).total_seconds())
    with _waiting_lock:
        since = _waiting_since.get(queue)
    waiting = since is not None and broker.reachable and bool(broker.depths.waiting)
    if not waiting or now.timestamp() - since < limit or (age is not None and age < limit):
        return ConsumerProgress(False, None, age, limit)
    ready = broker.depths.queue or 0
    held = broker.depths.migrating
    if held is not None:
        detail = (
            f"{ready} messages ready in {queue} and {held} held in "
            f"{Topology.migrating(queue)}: a queue migration is in progress or was interrupted "
            "(run `cqrs_queues migrate --to <type>` again to finish it)"
        )
    elif not broker.depths.consumers:
        detail = f"{ready} messages ready in {queue} and no consumer on it"
    else:
        applied = "nothing applied yet" if age is None else f"nothing applied for {age:.0f}s"
        detail = (
            f"{ready} messages ready in {queue} for {now.timestamp() - since:.0f}s, {applied} "
            f"({broker.depths.consumers} consumers: paused, hung or cut from the broker?)"
        )
    return ConsumerProgress(True, detail, age, limit)


@dataclass(frozen=True)
class ReplicationStatus:
    queue: str
    dead_letter_queue: str
    broker: BrokerView
    last_applied: ReplicaState | None
    estimated_lag_seconds: float | None
    consumer: ConsumerProgress

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
    now = timezone.now()
    queue = active_queue(topology)
    return ReplicationStatus(
        queue=queue,
        dead_letter_queue=topology.dead_letter_queue,
        broker=broker,
        last_applied=last,
        estimated_lag_seconds=_estimated_lag(broker, last, now),
        consumer=consumer_progress(queue, broker, states.first(), now),
    )


def _estimated_lag(broker: BrokerView, last: ReplicaState | None, now: datetime) -> float | None:
    """Nothing waiting: 0. Messages waiting: the age of the master change the replica shows
    last — how far behind the master it is, at least. Unknown when the broker is not
    answering or nothing was applied yet."""
    if not broker.reachable:
        return None
    waiting = broker.depths.waiting + (broker.depths.retries_scheduled or 0)
    if waiting == 0:
        return 0.0
    if last is None or last.master_updated_at is None:
        return None
    return max(0.0, (now - last.master_updated_at).total_seconds())
