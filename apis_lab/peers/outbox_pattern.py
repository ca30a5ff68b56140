"""django-outbox-pattern 3.2 (juntossomosmais) as a pipeline of the lab, used as its README
says: the `@publish` decorator on Produto writes a `Published` row in the save's transaction
(`outbox_pattern_app`); `manage.py publish` polls that table and sends each row over STOMP;
`manage.py subscribe <callback> <destination> <queue>` consumes with a callback that applies
the change into ProdutoMirror and `payload.save()`s it in one transaction.

STOMP needs RabbitMQ's `rabbitmq_stomp` plugin, which the machine's broker does not have (and
the lab never enables plugins there): the bench starts one private node with it for every
pipeline of the run and the ceiling (`Bench.broker_plugins`), the fault suite starts its node
with it and puts a proxy in front of its STOMP port too (`Chaos.broker_plugins`). The port
reaches the processes as APIS_LAB_STOMP_PORT (`outbox_pattern_options`).
"""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass, field

from apis_lab.bench.pipelines import WORKERS
from apis_lab.bench.pipelines import Pipeline as BenchPipeline
from apis_lab.catalogue import FEED, PRODUTOS
from apis_lab.chaos.pipelines import _PROJECT_MACHINERY, Setup
from apis_lab.chaos.pipelines import Pipeline as ChaosPipeline
from apis_lab.lab_run import run_manage
from apis_lab.peers.outbox_pattern_app import DESTINATION_ENV
from apis_lab.supervised_ecosystem import Ecosystem
from apis_lab.supervision import ManageProcess

NAME = "outbox-pattern"
PLUGINS = ("rabbitmq_stomp",)
MASTER_SETTINGS = "apis_lab.peers.outbox_pattern_settings"
REPLICA_SETTINGS = "apis_lab.peers.outbox_pattern_feed_settings"
CALLBACK = "apis_lab.peers.outbox_pattern_app.apply_change"


@dataclass(frozen=True)
class Names:
    """One run's destination (routing key on `amq.topic`) and the replica's queue; the library
    declares `DLQ.<queue>` beside it."""

    token: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def destination(self) -> str:
        return f"/topic/produto.op{self.token}"

    @property
    def queue(self) -> str:
        return f"outbox_pattern_{self.token}"

    @property
    def queues(self) -> list[str]:
        return [self.queue, f"DLQ.{self.queue}"]


def master_env(env: dict[str, str], names: Names) -> dict[str, str]:
    return {**env, "DJANGO_SETTINGS_MODULE": MASTER_SETTINGS, DESTINATION_ENV: names.destination}


def replica_env(env: dict[str, str], names: Names) -> dict[str, str]:
    return {**env, "DJANGO_SETTINGS_MODULE": REPLICA_SETTINGS, DESTINATION_ENV: names.destination}


def subscribe_args(names: Names) -> list[str]:
    return ["subscribe", CALLBACK, names.destination, names.queue]


def migrate(produtos_env: dict[str, str], feed_env: dict[str, str], names: Names) -> None:
    """The library's tables (`published` on the master, `received` on the replica)."""
    run_manage(PRODUTOS.directory, master_env(produtos_env, names), "migrate", "--noinput")
    run_manage(FEED.directory, replica_env(feed_env, names), "migrate", "--noinput")


@dataclass
class Bench(BenchPipeline):
    """`apis bench`'s outbox-pattern: its writer (saves, B per transaction), `manage.py
    publish`, `manage.py subscribe` with the lab's callback."""

    name: str = NAME
    #: The bench's writer in its `saves` mode: the decorator publishes from `save()` only.
    writer: str = "saves"
    names: Names = field(default_factory=Names)
    broker_plugins = PLUGINS

    def prepare(self, produtos_env, feed_env, log):
        migrate(produtos_env, feed_env, self.names)

    def relay(self, produtos_env, log):
        return ManageProcess(
            PRODUTOS.directory, ["publish"], master_env(produtos_env, self.names), log
        )

    def consumer(self, feed_env, log):
        return ManageProcess(
            FEED.directory, subscribe_args(self.names), replica_env(feed_env, self.names), log
        )

    def writer_process(self, produtos_env, args, log):
        env = master_env(produtos_env, self.names)
        return ManageProcess(
            PRODUTOS.directory, [], env, log, command=[sys.executable, "-m", WORKERS, *args]
        )

    def queue(self, feed_env):
        return self.names.queue

    def queues(self, feed_env):
        return [*super().queues(feed_env), *self.names.queues]


class Chaos(ChaosPipeline):
    """Both APIs — the master's under `outbox_pattern_settings`, so that every REST write goes
    through the decorator — `manage.py publish` as the relay and `manage.py subscribe` as the
    consumer. No Celery (nothing of the project's repairs what the peer loses), no Redis role
    (the peer's relay and consumer keep their cache in memory)."""

    name = NAME
    roles = frozenset({"web", "relay", "consumer"})
    skips = {
        **_PROJECT_MACHINERY,
        "poison": "the dead-letter check is of this project's policy (the peer dead-letters "
        "to DLQ.<queue> by its own)",
    }
    broker_plugins = PLUGINS

    def __init__(self) -> None:
        self.names = Names()

    def start(self, setup: Setup) -> Ecosystem:
        names = self.names
        consumer = [sys.executable, "manage.py", *subscribe_args(names)]
        relay = [sys.executable, "manage.py", "publish"]
        overlay = {DESTINATION_ENV: names.destination}
        return self._ecosystem(
            setup,
            env=overlay,
            replace={"consumer": consumer, "relay": relay, "produtos-worker": None,
                     "produtos-beat": None, "feed-worker": None, "feed-beat": None},
            role_env={"produtos": {"DJANGO_SETTINGS_MODULE": MASTER_SETTINGS},
                      "relay": {"DJANGO_SETTINGS_MODULE": MASTER_SETTINGS},
                      "consumer": {"DJANGO_SETTINGS_MODULE": REPLICA_SETTINGS}},
            after_prepare=lambda eco: migrate(eco.envs["produtos"], eco.envs["feed"], names),
        ).start()  # fmt: skip

    def replica_queue(self, eco: Ecosystem) -> str:
        return self.names.queue
