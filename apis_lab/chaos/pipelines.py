"""The replication pipelines the fault suite can run: which processes a run starts, and so which
fault kinds mean something for it (a kind acting on a role the pipeline lacks, or on machinery
only this project has, is skipped and listed in the report).

- `project`: this project's pipeline (transactional outbox, relay, batching consumer): it must
  lose nothing, and the suite's exit code says whether it did;
- `stock`: django-cqrs as it ships: the master publishes each change when its transaction
  commits, django-cqrs's own consumer applies with its `ReplicaManager` and its own retry (the
  processes `apis bench` measures as `stock`);
- `celery`: the seed's pattern, one Celery task per change (REPLICATION_MODE=celery), applied by
  the replica's Celery worker (`apis bench`'s `celery`).

For `stock` and `celery` a loss is a measured result, not a failure of the run.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from apis_lab.bench.pipelines import STOCK_TRANSPORT, WORKERS
from apis_lab.chaos import crash_hook, stock_hook
from apis_lab.databases import Databases
from apis_lab.peers import PEERS, peer_module
from apis_lab.supervised_ecosystem import Ecosystem

#: The replica's change counter (bumped by every batch this project's apply writes).
REPLICA_STATE_COUNTER = "SELECT COALESCE(SUM(version), 0) FROM cqrs_replica_replicastate"
#: The same for a replica that keeps no state of its own: moves with every row applied.
MIRROR_COUNTER = "SELECT COALESCE(SUM(cqrs_revision), 0) + COUNT(*) FROM feed_produtomirror"
#: What only this project's consumer has (its workers, dead-letter policy, reconcile, queue
#: migration): the kinds that act on it mean nothing for the other pipelines.
_PROJECT_MACHINERY = {
    "kill-consumer-worker": "its consumer is one process, no workers",
    "pause-consumer-worker": "its consumer is one process, no workers",
    "poison": "the dead-letter check is of this project's policy",
    "crash-loop": "the crash hook acts on this project's consumer",
    "queue-deleted": "repaired by this project's reconcile",
    "migrate-killed": "this project's queue migration",
}


@dataclass
class Setup:
    """What the suite prepared for the pipeline: where its files go, the broker URL its
    processes use (through the suite's proxies) and the one the suite's checks use, Redis, the
    databases, and settings for every process."""

    work: Path
    broker_url: str
    lab_url: str
    redis_url: str
    databases: Databases
    env: dict[str, str] = field(default_factory=dict)
    consumers: int = 1
    consumer_processes: int = 1
    relays: int = 1


class Pipeline:
    name: ClassVar[str]
    #: Process roles it runs: `web`, `relay`, `consumer`, `celery`, `redis`.
    roles: ClassVar[frozenset[str]]
    #: Fault kinds that mean nothing for it although its roles are there → why.
    skips: ClassVar[dict[str, str]] = {}
    #: A lost write breaks an invariant (exit code 1): only the project promises none.
    must_not_lose: ClassVar[bool] = False
    #: Its consumer runs worker processes (`spawn_main` children) the suite checks for.
    consumer_workers: ClassVar[bool] = False
    #: The suite checks that the dead-letter queue holds exactly the injected messages.
    checks_dead_letters: ClassVar[bool] = False
    #: SQL on the replica whose value moves whenever something was applied.
    applied_counter: ClassVar[str] = MIRROR_COUNTER
    #: Plugins its broker needs beyond AMQP (a peer's `rabbitmq_stomp`): the suite's node gets
    #: them, and a proxy in front of the STOMP port (APIS_LAB_STOMP_PORT) as of the AMQP one.
    broker_plugins: ClassVar[tuple[str, ...]] = ()

    def start(self, setup: Setup) -> Ecosystem:
        raise NotImplementedError

    def replica_queue(self, eco: Ecosystem) -> str:
        """The queue the replica consumes the changes from."""
        return eco.queue

    def _ecosystem(self, setup: Setup, **kwargs) -> Ecosystem:
        return Ecosystem(
            setup.work, setup.broker_url, setup.redis_url, setup.databases,
            extra_env={**setup.env, **kwargs.pop("env", {})}, consumers=setup.consumers,
            consumer_processes=setup.consumer_processes, relays=setup.relays,
            lab_url=setup.lab_url, **kwargs,
        )  # fmt: skip


class ProjectPipeline(Pipeline):
    """Both APIs, the outbox relay, `cqrs_consume`, each service's Celery worker and beat: the
    processes `apis up` runs. The consumer (and only it) gets the lab's crash-loop hook."""

    name = "project"
    roles = frozenset({"web", "relay", "consumer", "celery", "redis"})
    must_not_lose = True
    consumer_workers = True
    checks_dead_letters = True
    applied_counter = REPLICA_STATE_COUNTER

    def start(self, setup: Setup) -> Ecosystem:
        return self._ecosystem(setup, role_env={"consumer": crash_hook.environment()}).start()


class StockPipeline(Pipeline):
    """Both APIs; the master's web server publishes on commit (`stock_hook`); one django-cqrs
    `RabbitMQTransport.consume()` process applies with `ReplicaManager` (`apis bench`'s
    stock consumer) on a classic queue. No relay, no Celery: nothing of the project repairs
    what stock django-cqrs loses."""

    name = "stock"
    roles = frozenset({"web", "consumer"})
    skips = _PROJECT_MACHINERY

    def start(self, setup: Setup) -> Ecosystem:
        consumer = [sys.executable, "-m", WORKERS, "stock-consumer"]
        return self._ecosystem(
            setup,
            env={"CQRS_TRANSPORT": STOCK_TRANSPORT, "CQRS_QUEUE_TYPE": "classic"},
            replace={"consumer": consumer, "relay": None, "produtos-worker": None,
                     "produtos-beat": None, "feed-worker": None, "feed-beat": None},
            role_env={"produtos": stock_hook.environment(),
                      "consumer": {"DJANGO_SETTINGS_MODULE": "api_feed.settings"}},
        ).start()  # fmt: skip


class CeleryPipeline(Pipeline):
    """The seed's pattern: the relay sends one Celery task per change (REPLICATION_MODE=celery)
    to the replica's Celery worker; no django-cqrs consumer."""

    name = "celery"
    roles = frozenset({"web", "relay", "celery", "redis"})
    skips = _PROJECT_MACHINERY

    def start(self, setup: Setup) -> Ecosystem:
        return self._ecosystem(setup, env={"REPLICATION_MODE": "celery"}, mode="celery").start()

    def replica_queue(self, eco: Ecosystem) -> str:
        return f"{eco.queue}.feed.tasks"  # CELERY_QUEUE_PREFIX is the queue's name and a dot


PIPELINES: dict[str, type[Pipeline]] = {
    pipeline.name: pipeline for pipeline in (ProjectPipeline, StockPipeline, CeleryPipeline)
}

#: Every pattern `--pipeline` accepts: these and the peer outbox libraries (apis_lab/peers).
PIPELINE_NAMES: tuple[str, ...] = (*PIPELINES, *PEERS)


def pipeline_class(name: str) -> type[Pipeline]:
    """The pipeline called `name`; a peer's module is imported only when it is asked for."""
    if name in PEERS:
        return peer_module(name).Chaos
    return PIPELINES[name]
