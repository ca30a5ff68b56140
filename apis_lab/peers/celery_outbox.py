"""django-celery-outbox 0.4 as a pipeline of the lab (`celery-outbox`, issue 23).

Set up as its documentation says (Quick Start, Getting Started, Relay Tuning, Kubernetes):

- master: the service's Celery app is an `OutboxCelery`; each change sends the replica's
  `replica.apply_event` task inside the change's transaction, which writes a row of the
  library's `celery_outbox` table (celery_outbox_master); this project's outbox gets nothing;
- relay: `manage.py celery_outbox_relay` — its retries (capped exponential backoff, dead
  letter after 5), its breaker on broker outages, publish concurrency 1 (its baseline: id
  order), the production-style liveness file, and the tuning page's values for a high-volume,
  real-time workload (`--batch-size 500 --idle-time 0.1`);
- broker: the Celery topology of its Getting Started — a topic exchange per queue, quorum
  queues, native delayed delivery on quorum queues, publisher confirms
  (celery_outbox_conf.celery_settings) — on the lab's RabbitMQ, as the `celery` pipeline;
- replica: `celery -A api_feed worker` running `replica.apply_event` — the same task, acks late,
  rejected on worker loss and retried as in the seed's `celery` pipeline — so that the two
  differ only in the outbox and its relay.

The library needs `SELECT … FOR UPDATE SKIP LOCKED`, which SQLite lacks: when a run's databases
are SQLite files, the master's alone is a database on PostgreSQL (the bench's server, or the
machine's), dropped after the run; the replica stays where the run put it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from apis_lab.bench.pipelines import Pipeline
from apis_lab.catalogue import FEED, PRODUTOS
from apis_lab.chaos.pipelines import _PROJECT_MACHINERY, Setup
from apis_lab.chaos.pipelines import Pipeline as ChaosPipeline
from apis_lab.databases import Databases
from apis_lab.lab_run import run_manage
from apis_lab.supervised_ecosystem import Ecosystem, EcosystemError
from apis_lab.supervision import ManageProcess

WORKERS = "apis_lab.bench.workers"
MASTER_SETTINGS = "apis_lab.peers.celery_outbox_settings"
REPLICA_SETTINGS = "apis_lab.peers.celery_outbox_feed_settings"
#: The master's PostgreSQL server when a run's databases are SQLite files.
DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/postgres"
#: The relay's flags: its tuning page's "high volume (>1000/min)" batch and "real-time" idle
#: time; every other one its default (retries 5 with a 120 s base backoff, a 30 s breaker on
#: broker outages, a 300 s stale timeout, publish concurrency 1).
RELAY_ARGS = ("--batch-size", "500", "--idle-time", "0.1")
#: What RabbitMQ's native delayed delivery declares, on every vhost it is used on (the relay
#: at start-up, the worker on a quorum queue): 28 queues and exchanges and one exchange.
DELAYED_DELIVERY = (*(f"celery_delayed_{level}" for level in range(28)), "celery_delayed_delivery")


def is_postgres(url: str) -> bool:
    return url.startswith(("postgres://", "postgresql://"))


def postgres_server() -> str:
    """Where the master's database goes when the run's are SQLite: DATABASE_URL's server if it
    is PostgreSQL, else the machine's."""
    url = os.environ.get("DATABASE_URL", "")
    return url if is_postgres(url) else DEFAULT_POSTGRES


def relay_command(liveness_file: Path) -> list[str]:
    """`manage.py celery_outbox_relay` with the flags above and the production-style liveness
    file (its Kubernetes page)."""
    return PRODUTOS.manage(
        "celery_outbox_relay", *RELAY_ARGS, "--liveness-file", str(liveness_file)
    )


def worker_args(queue: str, concurrency: int = 1, level: str = "WARNING") -> list[str]:
    """The replica's Celery worker on the task queue (its settings: REPLICA_SETTINGS)."""
    return ["-A", "api_feed", "worker", "--concurrency", str(concurrency), "-n", "feed@%h",
            "-Q", queue, "-l", level]  # fmt: skip


def delayed_delivery_declared(rabbitmq_url: str) -> bool:
    """Whether native delayed delivery's objects are already on the broker (someone else's)."""
    from django_tools.connectivity import amqp_channel

    try:
        with amqp_channel(rabbitmq_url) as channel:
            channel.queue_declare(DELAYED_DELIVERY[0], passive=True)
    except Exception:
        return False
    return True


class MasterOnPostgres(Databases):
    """The run's databases, but the master's on a PostgreSQL server (the library needs SKIP
    LOCKED); `drop_all` drops only what this one created."""

    def __init__(self, base: Databases, server_url: str) -> None:
        super().__init__(base.tmp, server_url=server_url, prefix=f"{base.prefix}cob")
        self.base = base

    def url_for(self, service: str) -> str:
        return super().url_for(service) if service == PRODUTOS.name else self.base.url_for(service)


# --- apis bench ---------------------------------------------------------------------------


@dataclass
class Bench(Pipeline):
    """The bench's writer (N creates, commit times stamped as for `project`) under the master's
    overlay, the library's relay, one replica Celery worker (concurrency 1, as `celery`)."""

    name: str = "celery-outbox"
    prefix: str = field(default_factory=lambda: f"bench{uuid.uuid4().hex[:8]}.")
    master_database: Databases | None = None
    #: The delayed-delivery objects were not there before this run: deleted after it.
    delayed_delivery_ours: bool = False

    def __post_init__(self) -> None:
        self.env = {"REPLICATION_MODE": "celery", "CELERY_QUEUE_PREFIX": self.prefix}

    def prepare(self, produtos_env, feed_env, log):
        produtos_env["DJANGO_SETTINGS_MODULE"] = MASTER_SETTINGS
        feed_env["DJANGO_SETTINGS_MODULE"] = REPLICA_SETTINGS
        if not is_postgres(produtos_env["DATABASE_URL"]):
            self.master_database = Databases(log.parent, postgres_server(), prefix="benchcob")
            produtos_env["DATABASE_URL"] = self.master_database.url_for(PRODUTOS.name)
        # The library's Getting Started: migrate, then check the outbox's database.
        run_manage(PRODUTOS.directory, produtos_env, "migrate", "--noinput")
        run_manage(PRODUTOS.directory, produtos_env, "check", "--database", "default")
        self.delayed_delivery_ours = not delayed_delivery_declared(produtos_env["RABBITMQ_URL"])

    def writer_process(self, produtos_env, args, log):
        return ManageProcess.module(
            PRODUTOS.directory, MASTER_SETTINGS, WORKERS, args, produtos_env, log
        )

    def relay(self, produtos_env, log):
        command = relay_command(log.with_name(f"{self.name}-relay.alive"))
        return ManageProcess(PRODUTOS.directory, [], produtos_env, log, command=command)

    def consumer(self, feed_env, log):
        return ManageProcess.module(
            FEED.directory, REPLICA_SETTINGS, "celery", worker_args(self.queue(feed_env)),
            feed_env, log,
        )  # fmt: skip

    def queue(self, feed_env):
        return f"{self.prefix}feed.tasks"

    def queues(self, feed_env):
        delayed = list(DELAYED_DELIVERY) if self.delayed_delivery_ours else []
        return [*super().queues(feed_env), self.queue(feed_env), f"{self.prefix}produtos.tasks",
                *delayed]  # fmt: skip

    def cleanup(self):
        if self.master_database is not None:
            self.master_database.drop_all()


# --- apis chaos ---------------------------------------------------------------------------


@dataclass
class PeerEcosystem(Ecosystem):
    """The ecosystem with every process of a service under the peer's overlay settings, and the
    library's tables migrated (and checked) on the master's database."""

    own_databases: Databases | None = None

    def prepare(self) -> None:
        super().prepare()
        self.envs[PRODUTOS.name]["DJANGO_SETTINGS_MODULE"] = MASTER_SETTINGS
        self.envs[FEED.name]["DJANGO_SETTINGS_MODULE"] = REPLICA_SETTINGS
        for args in (("migrate", "--noinput"), ("check", "--database", "default")):
            result = self.manage(PRODUTOS.name, *args)
            if result.returncode != 0:
                raise EcosystemError(
                    f"produtos {' '.join(args)} (django-celery-outbox) failed: "
                    f"{(result.stdout + result.stderr).strip()[-800:]}"
                )

    def stop(self) -> None:
        super().stop()
        if self.own_databases is not None:
            with contextlib.suppress(Exception):
                self.own_databases.drop_all()


class Chaos(ChaosPipeline):
    """Both APIs (the master's under the overlay: its REST writes go through the library), the
    library's relay, and the replica's Celery worker as the consumer (`kill-consumer` kills it).
    No Redis role, no beat: nothing of this project repairs what the peer loses."""

    name = "celery-outbox"
    roles = frozenset({"web", "relay", "consumer"})
    skips: ClassVar[dict[str, str]] = {
        **_PROJECT_MACHINERY,
        "kill-consumer-worker": "its consumer is a Celery worker: kill-consumer kills it",
        "pause-consumer-worker": "its consumer is a Celery worker, not cqrs_consume's workers",
        "queue-deleted": "repaired only by this project's reconcile, which the peer lacks",
    }

    def start(self, setup: Setup) -> Ecosystem:
        databases = setup.databases
        own = None if databases.is_postgres else MasterOnPostgres(databases, postgres_server())
        eco = PeerEcosystem(
            setup.work, setup.broker_url, setup.redis_url, own or databases,
            extra_env={**setup.env, "REPLICATION_MODE": "celery"}, consumers=1,
            consumer_processes=setup.consumer_processes, relays=setup.relays,
            lab_url=setup.lab_url, own_databases=own,
        )  # fmt: skip
        worker = worker_args(self.replica_queue(eco), setup.consumers, level="INFO")
        eco.replace = {
            "relay": relay_command(setup.work / "celery-outbox-relay.alive"),
            "consumer": [sys.executable, "-m", "celery", *worker],
            "produtos-worker": None, "produtos-beat": None, "feed-worker": None,
            "feed-beat": None,
        }  # fmt: skip
        return eco.start()

    def replica_queue(self, eco: Ecosystem) -> str:
        return f"{eco.queue}.feed.tasks"  # CELERY_QUEUE_PREFIX is the queue's name and a dot
