"""django-jaiminho 2.2 as a pipeline of the lab (`jaiminho`, issue 23): `Bench` for `apis bench`,
`Chaos` for `apis chaos`. What runs: the master (its writer, or its web server) under
`apis_lab.peers.jaiminho_settings`, where each change stores a call to the decorated
`publish_change` in jaiminho's table, in the change's transaction; jaiminho's own
`manage.py events_relay --run-in-loop --loop-interval 0.1` (keep-order: in order, stuck on a
failure until it succeeds) replays the calls — a confirmed pika publish each; and a minimal pika
consumer (`python -m apis_lab.peers.jaiminho_replication consume`) writing ProdutoMirror.
The pieces are in apis_lab/peers/jaiminho_replication.py."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from apis_lab.bench import pipelines as bench
from apis_lab.bench.pipelines import WORKERS, BenchError
from apis_lab.catalogue import FEED, PRODUTOS
from apis_lab.chaos import pipelines as chaos
from apis_lab.supervised_ecosystem import Ecosystem, EcosystemError
from apis_lab.supervision import ManageProcess

SETTINGS = "apis_lab.peers.jaiminho_settings"
PIECES = "apis_lab.peers.jaiminho_replication"
#: Kept in step with jaiminho_replication.RELAY_COMMAND (which imports pika and jaiminho:
#: this module must stay light, the CLI lists the pipelines without them).
RELAY = ["events_relay", "--run-in-loop", "--loop-interval", "0.1"]
SUFFIX = ".jaiminho"


def _queue(base: str) -> str:
    return f"{base}{SUFFIX}"


def _migrate(env: dict[str, str]) -> subprocess.CompletedProcess:
    """jaiminho's table on the master's database (the rest is migrated already)."""
    return subprocess.run(
        [sys.executable, "manage.py", "migrate", "jaiminho", "--noinput"],
        cwd=PRODUTOS.directory, env={**env, "DJANGO_SETTINGS_MODULE": SETTINGS},
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip


@dataclass
class Bench(bench.Pipeline):
    name: str = "jaiminho"
    writer: str = "project"  # the writer saves in one transaction: here, with jaiminho's call
    env: dict[str, str] = field(default_factory=dict)

    def prepare(self, produtos_env, feed_env, log: Path) -> None:
        result = _migrate(produtos_env)
        if result.returncode != 0:
            raise BenchError(f"jaiminho's migrate failed: {result.stderr.strip()[-500:]}")

    def writer_process(self, produtos_env, args, log):
        return ManageProcess.module(PRODUTOS.directory, SETTINGS, WORKERS, args, produtos_env, log)

    def relay(self, produtos_env, log):
        return ManageProcess(
            PRODUTOS.directory, RELAY, {**produtos_env, "DJANGO_SETTINGS_MODULE": SETTINGS}, log
        )

    def consumer(self, feed_env, log):
        return ManageProcess.module(
            FEED.directory, "api_feed.settings", PIECES, ["consume"], feed_env, log
        )

    def queue(self, feed_env):
        return _queue(feed_env["CQRS_QUEUE"])

    def queues(self, feed_env):
        return [*super().queues(feed_env), self.queue(feed_env)]


@dataclass
class _Ecosystem(Ecosystem):
    """The lab's ecosystem, with jaiminho's table migrated on the master."""

    def prepare(self) -> None:
        super().prepare()
        result = _migrate(self.envs[PRODUTOS.name])
        if result.returncode != 0:
            raise EcosystemError(f"jaiminho's migrate failed: {result.stderr.strip()[-800:]}")


class Chaos(chaos.Pipeline):
    """Both APIs, the master's under jaiminho's settings (its REST writes store jaiminho's
    calls; this project's outbox signals are off there), `events_relay`, the pika consumer. No
    Celery, no Redis: nothing of the project repairs what it loses."""

    name = "jaiminho"
    roles = frozenset({"web", "relay", "consumer"})
    skips = chaos._PROJECT_MACHINERY

    def start(self, setup: chaos.Setup) -> Ecosystem:
        master = {"DJANGO_SETTINGS_MODULE": SETTINGS}
        return _Ecosystem(
            setup.work, setup.broker_url, setup.redis_url, setup.databases,
            extra_env=dict(setup.env), consumers=setup.consumers,
            consumer_processes=setup.consumer_processes, relays=setup.relays,
            lab_url=setup.lab_url,
            replace={
                "relay": PRODUTOS.manage(*RELAY),
                "consumer": [sys.executable, "-m", PIECES, "consume"],
                "produtos-worker": None, "produtos-beat": None,
                "feed-worker": None, "feed-beat": None,
            },
            role_env={
                "produtos": master, "relay": master,
                "consumer": {"DJANGO_SETTINGS_MODULE": "api_feed.settings"},
            },
        ).start()  # fmt: skip

    def replica_queue(self, eco: Ecosystem) -> str:
        return _queue(eco.queue)
