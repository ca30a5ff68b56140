"""The pipelines the bench compares, one type each: what runs on the replica side, whether a
relay runs, how the writer saves, which queues to clean up. `run()` is the same for all."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from apis_lab.bench import cpu
from apis_lab.bench.report import PipelineRun
from apis_lab.broker_objects import delete_broker_objects, replica_queues
from apis_lab.catalogue import FEED, PRODUTOS
from apis_lab.databases import Databases, ServiceDatabase
from apis_lab.lab_run import service_environment
from apis_lab.supervision import ManageProcess
from django_tools.connectivity import amqp_channel
from django_tools.env import CLASSIC

WORKERS = "apis_lab.bench.workers"
STOCK_TRANSPORT = "dj_cqrs.transport.RabbitMQTransport"


class BenchError(Exception):
    """The bench cannot run or a pipeline did not deliver; said in one line."""


@dataclass
class Pipeline:
    """One way of carrying N creates from the master to the replica."""

    name: str = ""
    #: How the writer process saves: `stock` (django-cqrs publishes on commit) or `project`
    #: (the change and its outbox row in one transaction).
    writer: str = "project"
    env: dict[str, str] = field(default_factory=dict)
    #: Plugins its broker needs beyond AMQP (a peer's `rabbitmq_stomp`): the bench then runs
    #: every pipeline and the ceiling on one private node that has them.
    broker_plugins: ClassVar[tuple[str, ...]] = ()
    #: The replica's topology is declared (`cqrs_declare`) before its consumer starts.
    declares: ClassVar[bool] = True

    def prepare(self, produtos_env: dict, feed_env: dict, log: Path) -> None:
        """Before any process starts, on fresh databases (a peer migrates its own tables)."""

    def consumer(self, feed_env: dict, log: Path) -> ManageProcess:
        raise NotImplementedError

    def writer_process(self, produtos_env: dict, args: list[str], log: Path) -> ManageProcess:
        """The writer: `apis_lab.bench.workers writer ARGS` under the master's settings."""
        return ManageProcess.module(
            PRODUTOS.directory, "api_produtos.settings", WORKERS, args, produtos_env, log
        )

    def relay(self, produtos_env: dict, log: Path) -> ManageProcess | None:
        return ManageProcess(PRODUTOS.directory, ["outbox_relay"], produtos_env, log)

    def queue(self, feed_env: dict) -> str:
        """The queue whose consumer must be up before the writer starts."""
        return feed_env["CQRS_QUEUE"]

    def queues(self, feed_env: dict) -> list[str]:
        return replica_queues(feed_env["CQRS_QUEUE"])

    def cleanup(self) -> None:
        """After the run, its processes stopped: a peer drops what its `prepare` made."""


@dataclass
class Stock(Pipeline):
    """django-cqrs 3.1 as it ships: the ORM save publishes on commit (`RabbitMQTransport`), one
    `RabbitMQTransport.consume()` worker applies with django-cqrs's `ReplicaManager`."""

    name: str = "stock"
    writer: str = "stock"
    #: Its consumer declares its own queues, without a type: the broker's "/" vhost decides
    #: which (`broker_objects.untyped_queue_type`; the bench says which it was).
    declares: ClassVar[bool] = False
    queue_type: str = CLASSIC

    def __post_init__(self) -> None:
        self.env = {"CQRS_TRANSPORT": STOCK_TRANSPORT, "CQRS_QUEUE_TYPE": self.queue_type}

    def consumer(self, feed_env, log):
        return ManageProcess.module(
            FEED.directory, "api_feed.settings", WORKERS, ["stock-consumer"], feed_env, log
        )

    def relay(self, produtos_env, log):
        return None


@dataclass
class Project(Pipeline):
    """This project: the outbox, `outbox_relay` with pipelined confirms, `cqrs_consume -w N`
    applying in batches."""

    name: str = "project"
    consumers: int = 2

    def consumer(self, feed_env, log):
        return ManageProcess(
            FEED.directory, ["cqrs_consume", "-w", str(self.consumers)], feed_env, log
        )


@dataclass
class CeleryTasks(Pipeline):
    """The seed's pattern through the same outbox: one Celery task per change
    (REPLICATION_MODE=celery), one worker process applying them."""

    name: str = "celery"
    prefix: str = field(default_factory=lambda: f"bench{uuid.uuid4().hex[:8]}.")

    def __post_init__(self) -> None:
        self.env = {"REPLICATION_MODE": "celery", "CELERY_QUEUE_PREFIX": self.prefix}

    def consumer(self, feed_env, log):
        worker = ["-A", "api_feed", "worker", "--concurrency", "1", "-Q", self.queue(feed_env)]
        return ManageProcess.module(
            FEED.directory, "api_feed.settings", "celery", [*worker, "-l", "WARNING"], feed_env,
            log,
        )  # fmt: skip

    def queue(self, feed_env):
        return f"{self.prefix}feed.tasks"

    def queues(self, feed_env):
        return [*super().queues(feed_env), self.queue(feed_env), f"{self.prefix}produtos.tasks"]


# --- the replica's clock: a trigger stamps every row as it is written --------------------

_SQLITE_TRIGGER = [
    "CREATE TABLE bench_applied (id INTEGER PRIMARY KEY, at REAL NOT NULL)",
    "CREATE TRIGGER bench_applied_stamp AFTER INSERT ON feed_produtomirror BEGIN "
    "INSERT OR IGNORE INTO bench_applied (id, at) "
    "VALUES (NEW.id, (julianday('now') - 2440587.5) * 86400.0); END",
]
_POSTGRES_TRIGGER = [
    "CREATE TABLE bench_applied (id bigint PRIMARY KEY, at double precision NOT NULL)",
    "CREATE FUNCTION bench_applied_stamp() RETURNS trigger AS $$ BEGIN "
    "INSERT INTO bench_applied VALUES (NEW.id, extract(epoch FROM clock_timestamp())) "
    "ON CONFLICT DO NOTHING; RETURN NEW; END $$ LANGUAGE plpgsql",
    "CREATE TRIGGER bench_applied_stamp AFTER INSERT ON feed_produtomirror "
    "FOR EACH ROW EXECUTE FUNCTION bench_applied_stamp()",
]


@dataclass
class Workload:
    """What every pipeline is given: N creates from one writer process, `batch` per
    transaction, as fast as it can or at `rate` writes/s."""

    n: int
    batch: int = 1
    rate: float | None = None
    #: Writes before the N measured ones, replicated like them and left out of the lags: the
    #: first change through freshly started processes pays for their cold start (connections
    #: opened, statements prepared, code paths run once), and at a steady rate the next ones
    #: queue behind it — at 200 writes/s the first 5-12 changes lagged 13-30 ms, enough to be
    #: the p99 of 1,000 on their own, in every pipeline.
    warmup: int = 0


def run(
    pipeline: Pipeline,
    workload: Workload,
    rabbitmq_url: str,
    databases: Databases,
    workdir: Path,
    progress,
    extra_env: dict[str, str] | None = None,
) -> PipelineRun:
    """One run: fresh databases, exchange and queues; the consumer (and relay) up; the writer;
    until the replica has all N rows. Everything is stopped and deleted afterwards."""
    name = pipeline.name
    env = {"LOG_LEVEL": "WARNING", **(extra_env or {}), **pipeline.env}
    progress.show(f"{name}: preparing databases and queues…")
    feed_env, feed_url = service_environment(
        "feed", workdir, rabbitmq_url, databases, declare=pipeline.declares, **env
    )
    produtos_env, _ = service_environment(
        "produtos", workdir, rabbitmq_url, databases,
        CQRS_EXCHANGE=feed_env["CQRS_EXCHANGE"], **env,
    )  # fmt: skip
    feed_db = ServiceDatabase(feed_url)
    feed_db.execute(_POSTGRES_TRIGGER if feed_db.is_postgres else _SQLITE_TRIGGER)
    log = workdir / f"{name}.log"
    started: list[ManageProcess] = []
    # CPU per role, by the hook that started the process (a peer's pipeline gets it as well);
    # the window runs from just before the writer starts to the last row on the replica.
    meter = cpu.CpuMeter()
    try:
        pipeline.prepare(produtos_env, feed_env, log)
        relay = pipeline.relay(produtos_env, log)
        if relay is not None:
            started.append(relay.start())
            meter.watch("relay", relay.process.pid)
        consumer = pipeline.consumer(feed_env, log).start()
        started.append(consumer)
        meter.watch("consumer", consumer.process.pid)
        meter.watch("broker", cpu.broker_pid(rabbitmq_url))
        _wait_for_consumer(rabbitmq_url, pipeline.queue(feed_env), log)
        out = workdir / f"{name}-writes.json"
        total = workload.warmup + workload.n
        args = ["writer", "--pipeline", pipeline.writer, "-n", str(total)]
        args += ["--batch", str(workload.batch), "--out", str(out)]
        if workload.rate:
            args += ["--rate", str(workload.rate)]
        meter.begin()
        writer = pipeline.writer_process(produtos_env, args, log).start()
        started.append(writer)
        meter.watch("writer", writer.process.pid)
        _wait_for_replica(name, total, writer, feed_db, log, progress, meter)
        meter.end()
        writes = json.loads(out.read_text())
        stamps = dict(feed_db.fetchall("SELECT id, at FROM bench_applied"))
    finally:
        for process in started:
            process.stop()
        with contextlib.suppress(Exception):
            delete_broker_objects(
                rabbitmq_url, feed_env["CQRS_EXCHANGE"], pipeline.queues(feed_env)
            )
        with contextlib.suppress(Exception):
            pipeline.cleanup()
    # The writer's own start-up (Python, Django) is not the cost of its writes: a writer that
    # says how much CPU it had spent at its first write is counted from there.
    meter.offset("writer", float(writes.get("cpu_at_first_s") or 0.0))
    committed = {int(pk): at for pk, at in writes["committed"].items()}
    measured = sorted(committed, key=committed.__getitem__)[workload.warmup :]
    return PipelineRun(
        name=name,
        n=total,
        seconds=max(stamps.values()) - writes["first"],
        write_seconds=writes["last"] - writes["first"],
        lags_ms=[(stamps[pk] - committed[pk]) * 1000 for pk in measured if pk in stamps],
        cpu_s=meter.spent() if cpu.available() else {},
    )


#: Seconds without one more row on the replica, once the writer is done, after which the rest
#: is taken as lost rather than late (a peer library that drops messages would otherwise hold
#: the bench for the whole deadline: 1,000 s at n=20,000).
STALL_S = 60.0


def _wait_for_replica(name, n, writer, feed_db, log, progress, meter=None) -> None:
    deadline = time.monotonic() + max(120.0, n / 20)
    last, moved = -1, time.monotonic()
    while True:
        applied = feed_db.scalar("SELECT COUNT(*) FROM bench_applied")
        if applied != last:
            last, moved = applied, time.monotonic()
        writing = not cpu.has_exited(writer.process)
        if not writing:
            if meter is not None and "writer" not in meter.stop:
                meter.end("writer")  # exited, not reaped yet: its CPU times are still in /proc
            writer.process.poll()
        progress.show(f"{name}: {applied}/{n} replicated" + (" (writing…)" if writing else ""))
        if not writing and writer.process.returncode != 0:
            raise BenchError(f"the {name} writer failed; see {log}")
        if applied >= n and not writing:
            return
        if not writing and time.monotonic() - moved > STALL_S:
            raise BenchError(
                f"{name}: {applied} of {n} replicated, and no more for {STALL_S:.0f}s after the "
                f"writer finished; see {log}"
            )
        if time.monotonic() > deadline:
            raise BenchError(f"{name}: only {applied} of {n} replicated in time; see {log}")
        time.sleep(0.1)


def _wait_for_consumer(rabbitmq_url: str, queue: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception), amqp_channel(rabbitmq_url) as channel:
            if channel.queue_declare(queue, passive=True).method.consumer_count:
                return
        time.sleep(0.2)
    raise BenchError(f"the consumer did not start within {timeout:.0f}s; see {log}")
