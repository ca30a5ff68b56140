"""`ChaosLab`: what the faults act on — the ecosystem, its broker node(s) and proxies, Redis and
the PostgreSQL server — with the look-ups they share; used by the faults and the runner."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from apis_lab.chaos import crash_hook
from apis_lab.chaos.pipelines import Pipeline, ProjectPipeline
from apis_lab.databases import PostgresServer
from apis_lab.proxy import BrokerProxies
from apis_lab.rabbit_nodes import RabbitCluster, RabbitNode
from apis_lab.redis_server import RedisServer
from apis_lab.supervised_ecosystem import Ecosystem
from apis_lab.supervision import Supervised, children_of
from django_tools.broker import blocking_connection


@dataclass
class ChaosLab:
    broker: RabbitNode | RabbitCluster
    redis: RedisServer
    eco: Ecosystem
    proxies: BrokerProxies | None = None
    postgres: PostgresServer | None = None
    poison_sent: int = 0
    crashes_sent: int = 0
    dead_letters: list[str] = field(default_factory=list)  # message ids the DLQ must hold
    #: The pattern under test: which checks apply to it (its queue, workers, dead letters).
    pipeline: Pipeline = field(default_factory=ProjectPipeline)
    _queue_type: str | None = None

    @property
    def nodes(self) -> list[RabbitNode]:
        return self.broker.nodes if isinstance(self.broker, RabbitCluster) else [self.broker]

    def next_poison(self) -> int:
        self.poison_sent += 1
        return self.poison_sent

    def next_crash(self) -> int:
        self.crashes_sent += 1
        return self.crashes_sent

    def crash_hook_kills(self) -> int:
        """How many consumer workers killed themselves on the crash-loop marker so far."""
        kills = 0
        for consumer in self.eco.named("consumer"):
            with contextlib.suppress(OSError):
                kills += consumer.log.read_text(errors="replace").count(crash_hook.KILL_LINE)
        return kills

    # --- the replica's queue type (migrate-killed flips it) -------------------------------

    def queue_type(self) -> str:
        if self._queue_type is None:
            listed = (
                self.nodes[0]
                .ctl("list_queues", "name", "type", "--quiet", "--no-table-headers", timeout=30)
                .stdout
            )
            types = dict(
                line.split("\t", 1) for line in listed.splitlines() if line.count("\t") == 1
            )
            self._queue_type = types.get(self.eco.queue, "quorum").strip()
        return self._queue_type

    def set_queue_type(self, queue_type: str) -> None:
        self._queue_type = queue_type
        self.eco.set_env("feed", CQRS_QUEUE_TYPE=queue_type)

    # --- which relay publishes ------------------------------------------------------------

    def active_relay(self, rng: random.Random) -> Supervised:
        """The relay holding the relay lock (the one publishing), else one drawn."""
        relays = [relay for relay in self.eco.named("relay") if relay.alive()]
        if len(relays) <= 1:
            return relays[0] if relays else rng.choice(self.eco.named("relay"))
        holder = self._relay_lock_holder()
        for relay in relays:
            if holder is not None and holder in (relay.pid, *children_of(relay.pid)):
                return relay
        return rng.choice(relays)

    def _relay_lock_holder(self) -> int | None:
        """The pid holding the relay lock: the `flock` beside the SQLite file (/proc/locks), or
        the PostgreSQL advisory lock (its session's client port, then the process owning that
        socket)."""
        url = self.eco.database_urls["produtos"]
        try:
            if not url.startswith(("postgres://", "postgresql://")):
                inode = os.stat(Path(urlsplit(url).path).with_suffix(".relay.lock")).st_ino
                for line in Path("/proc/locks").read_text().splitlines():
                    fields = line.split()
                    if (
                        "->" not in fields
                        and fields[1] == "FLOCK"
                        and (fields[5].rsplit(":", 1)[-1] == str(inode))
                    ):
                        return int(fields[4])
                return None
            port = self.eco.database("produtos").scalar(
                "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted LIMIT 1"
            )
            if port is None:
                return None
            return _socket_owner(int(port), [r.pid for r in self.eco.named("relay")])
        except (OSError, ValueError, IndexError):
            return None

    @contextlib.contextmanager
    def channel(self) -> Iterator:
        connection = blocking_connection(self.broker.url, socket_timeout=5, stack_timeout=5)
        try:
            yield connection.channel()
        finally:
            with contextlib.suppress(Exception):
                connection.close()


def _socket_owner(local_port: int, pids: list[int | None]) -> int | None:
    """Which of `pids` (or their children) has the TCP socket bound to `local_port`."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == local_port:
                    inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        for candidate in (pid, *children_of(pid)):
            with contextlib.suppress(OSError):
                for fd in Path(f"/proc/{candidate}/fd").iterdir():
                    with contextlib.suppress(OSError):
                        if os.readlink(fd) in inodes:
                            return candidate
    return None
