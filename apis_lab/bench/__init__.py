"""`uv run apis bench`: stock django-cqrs and this project's pipeline, side by side, in one run.

Each pipeline gets fresh databases (SQLite files in a temporary folder, or new PostgreSQL
databases), an exchange and a queue of its own, and the same work: N products created one by one
through the master's ORM by one writer process.

- stock: the writer saves with django-cqrs's own publish-on-commit (`RabbitMQTransport`), one
  `RabbitMQTransport.consume()` worker applies with django-cqrs's `ReplicaManager`;
- project: the writer saves into the transactional outbox, `outbox_relay` publishes with
  pipelined confirms, `cqrs_consume -w 1` applies in batches.

Measured per pipeline: end-to-end messages per second (first write → last row on the replica)
and the lag of each message (row written on the replica − commit on the master; a database
trigger stamps each replica row, the writer stamps each commit), p50 and p99. Before them, the
broker's own ceiling (raw pika, no database; `ceiling`) puts the ratios in proportion.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from pika.exceptions import AMQPError

from apis_lab.bench import ceiling
from apis_lab.bench.burst import run_burst
from apis_lab.broker import delete_broker_objects, replica_queues
from apis_lab.databases import Databases, ServiceDatabase
from apis_lab.lab import service_environment
from apis_lab.processes import ManageProcess
from apis_lab.services import FEED, PRODUTOS
from django_tools.connectivity import Unreachable, amqp_channel, probe_rabbitmq
from django_tools.env import DEFAULT_RABBITMQ_URL, redact_url

DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/postgres"
STOCK_TRANSPORT = "dj_cqrs.transport.RabbitMQTransport"
WORKERS = "apis_lab.bench.workers"
#: stock django-cqrs; this project (outbox, relay, batching consumer); the same outbox with one
#: Celery task per change (REPLICATION_MODE=celery, the seed's original pattern).
PIPELINES = ("stock", "project", "celery")


class BenchError(Exception):
    """The bench cannot run or a pipeline did not deliver; said in one line."""


@dataclass(frozen=True)
class PipelineResult:
    name: str
    n: int
    seconds: float
    write_seconds: float
    lags_ms: list[float]

    @property
    def msgs_per_s(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else 0.0

    @property
    def writes_per_s(self) -> float:
        return self.n / self.write_seconds if self.write_seconds > 0 else 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.lags_ms)
        if not ordered:
            return 0.0
        index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
        return ordered[index]

    def as_json(self) -> dict[str, float]:
        return {
            "msgs_per_s": round(self.msgs_per_s, 1),
            "lag_p50_ms": round(self.percentile(50), 1),
            "lag_p99_ms": round(self.percentile(99), 1),
        }


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


def _install_stamp(db: ServiceDatabase) -> None:
    db.execute(_POSTGRES_TRIGGER if db.is_postgres else _SQLITE_TRIGGER)


# --- one pipeline ------------------------------------------------------------------------


class Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def show(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write(f"\r\033[K{text}")
            sys.stderr.flush()

    def done(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write(f"\r\033[K{text}\n")
            sys.stderr.flush()


def run_pipeline(
    name: str,
    n: int,
    rabbitmq_url: str,
    databases: Databases,
    workdir: Path,
    progress: Progress,
    rate: float | None = None,
    batch: int = 1,
) -> PipelineResult:
    extra = {"LOG_LEVEL": "WARNING"}
    if name == "stock":
        extra["CQRS_TRANSPORT"] = STOCK_TRANSPORT
    if name == "celery":
        extra["REPLICATION_MODE"] = "celery"
        extra["CELERY_QUEUE_PREFIX"] = f"bench{uuid.uuid4().hex[:8]}."
    progress.show(f"{name}: preparing databases and queues…")
    feed_env, feed_url = service_environment("feed", workdir, rabbitmq_url, databases, **extra)
    produtos_env, _ = service_environment(
        "produtos", workdir, rabbitmq_url, databases,
        CQRS_EXCHANGE=feed_env["CQRS_EXCHANGE"], **extra,
    )  # fmt: skip
    feed_db = ServiceDatabase(feed_url)
    _install_stamp(feed_db)
    log = workdir / f"{name}.log"
    processes: list[ManageProcess] = []
    try:
        if name == "stock":
            consumer = ManageProcess.module(
                FEED.directory, "api_feed.settings", WORKERS, ["stock-consumer"], feed_env, log
            )
        elif name == "celery":
            celery_queue = f"{extra['CELERY_QUEUE_PREFIX']}feed.tasks"
            worker = ["-A", "api_feed", "worker", "--concurrency", "1", "-Q", celery_queue]
            consumer = ManageProcess.module(
                FEED.directory,
                "api_feed.settings",
                "celery",
                [*worker, "-l", "WARNING"],
                feed_env,
                log,
            )
        else:
            consumer = ManageProcess(FEED.directory, ["cqrs_consume", "-w", "1"], feed_env, log)
        if name != "stock":
            relay = ManageProcess(PRODUTOS.directory, ["outbox_relay"], produtos_env, log)
            processes.append(relay.start())
        processes.append(consumer.start())
        queue = celery_queue if name == "celery" else feed_env["CQRS_QUEUE"]
        _wait_for_consumer(rabbitmq_url, queue, log)

        out = workdir / f"{name}-writes.json"
        writer_args = ["writer", "--pipeline", "stock" if name == "stock" else "project"]
        writer_args += ["-n", str(n), "--batch", str(batch)]
        writer_args += ["--out", str(out)]
        if rate:
            writer_args += ["--rate", str(rate)]
        writer = ManageProcess.module(
            PRODUTOS.directory, "api_produtos.settings", WORKERS, writer_args, produtos_env, log
        ).start()
        processes.append(writer)
        deadline = time.monotonic() + max(120.0, n / 20)
        applied = 0
        while True:
            applied = feed_db.scalar("SELECT COUNT(*) FROM bench_applied")
            writing = writer.process.poll() is None
            progress.show(f"{name}: {applied}/{n} replicated" + (" (writing…)" if writing else ""))
            if not writing and writer.process.returncode != 0:
                raise BenchError(f"the {name} writer failed; see {log}")
            if applied >= n and not writing:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"{name}: only {applied} of {n} replicated in time; see {log}")
            time.sleep(0.1)
        writes = json.loads(out.read_text())
        stamps = dict(feed_db.fetchall("SELECT id, at FROM bench_applied"))
    finally:
        for process in processes:
            process.stop()
        queues = replica_queues(feed_env["CQRS_QUEUE"])
        if name == "celery":
            prefix = extra["CELERY_QUEUE_PREFIX"]
            queues += [f"{prefix}feed.tasks", f"{prefix}produtos.tasks"]
        delete_broker_objects(rabbitmq_url, feed_env["CQRS_EXCHANGE"], queues)
    committed = {int(pk): at for pk, at in writes["committed"].items()}
    lags = [(stamps[pk] - at) * 1000 for pk, at in committed.items() if pk in stamps]
    result = PipelineResult(
        name=name,
        n=n,
        seconds=max(stamps.values()) - writes["first"],
        write_seconds=writes["last"] - writes["first"],
        lags_ms=lags,
    )
    progress.done(
        f"{name}: {n} replicated, {result.msgs_per_s:,.0f} msgs/s end to end, "
        f"lag p50 {result.percentile(50):,.1f} ms, p99 {result.percentile(99):,.1f} ms"
    )
    return result


def _wait_for_consumer(rabbitmq_url: str, queue: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception), amqp_channel(rabbitmq_url) as channel:
            if channel.queue_declare(queue, passive=True).method.consumer_count:
                return
        time.sleep(0.2)
    raise BenchError(f"the consumer did not start within {timeout:.0f}s; see {log}")


# --- the whole bench ---------------------------------------------------------------------


@dataclass(frozen=True)
class BenchOptions:
    n: int = 3000
    database: str = "sqlite"
    as_json: bool = False
    rate: float | None = None
    batch: int = 100
    steady_rate: float = 200.0
    steady_n: int = 1000
    burst: int = 1200
    burst_clients: int = 8
    keep: bool = False


def run(options: BenchOptions) -> dict:
    rabbitmq_url = _broker_url()
    try:
        probe_rabbitmq(rabbitmq_url, timeout=3)
    except Unreachable as exc:
        raise BenchError(
            f"RabbitMQ is not reachable at {redact_url(rabbitmq_url)} ({exc}): start the "
            "infrastructure with `docker compose up -d`"
        ) from exc
    server = ""
    if options.database == "postgres":
        server = _postgres_url()
    workdir = Path(tempfile.mkdtemp(prefix="apis-bench-"))
    databases = Databases(workdir, server_url=server, prefix=f"bench{uuid.uuid4().hex[:4]}")
    progress = Progress(enabled=True)
    results: dict[str, PipelineResult] = {}
    steady: dict[str, PipelineResult] = {}
    burst = None
    try:
        progress.show("broker ceiling: raw pika, persistent messages, no database…")
        try:
            broker = ceiling.measure(rabbitmq_url, _ceiling_n(options.n))
        except (RuntimeError, AMQPError, OSError) as exc:
            raise BenchError(f"measuring the broker's ceiling failed: {exc}") from exc
        progress.done(f"broker ceiling: {broker.end_to_end_per_s:,.0f} msgs/s end to end")
        for name in PIPELINES:
            results[name] = run_pipeline(
                name, options.n, rabbitmq_url, databases, workdir, progress,
                rate=options.rate, batch=options.batch,
            )  # fmt: skip
        if options.steady_rate:
            for name in PIPELINES:
                steady[name] = run_pipeline(
                    name, options.steady_n, rabbitmq_url, databases, workdir, progress,
                    rate=options.steady_rate, batch=1,
                )  # fmt: skip
        if options.burst:
            burst = run_burst(
                rabbitmq_url, databases, workdir, progress, options.burst, options.burst_clients
            )
    finally:
        databases.drop_all()
        if not options.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return {
        "n": options.n,
        "stock": results["stock"].as_json(),
        "project": results["project"].as_json(),
        "_results": results,
        "_ceiling": broker,
        "_steady": steady,
        "_burst": burst,
    }


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        cells = [
            cell.rjust(width) if column else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells))
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return lines


def _pipeline_rows(results: dict[str, PipelineResult]) -> list[tuple[str, ...]]:
    return [
        ("pipeline", "msgs/s e2e", "writes/s", "lag p50 ms", "lag p99 ms"),
        *(
            (
                r.name,
                f"{r.msgs_per_s:,.0f}",
                f"{r.writes_per_s:,.0f}",
                f"{r.percentile(50):,.1f}",
                f"{r.percentile(99):,.1f}",
            )
            for r in results.values()
        ),
    ]


def render_table(report: dict, options: BenchOptions) -> str:
    results = report["_results"]
    stock, project = results["stock"], results["project"]
    pace = f"{options.rate:g} writes/s" if options.rate else "as fast as the writer can"
    lines = [
        f"apis bench — database {options.database}",
        "",
        f"1. Throughput: {options.n} creates per pipeline, {pace}, {options.batch} per transaction",
        "",
        *_table(_pipeline_rows(results)),
    ]
    ratio = project.msgs_per_s / stock.msgs_per_s if stock.msgs_per_s else float("inf")
    lines += ["", f"   project / stock end to end: {ratio:.1f}x"]
    if "celery" in results and stock.msgs_per_s:
        celery_ratio = results["celery"].msgs_per_s / stock.msgs_per_s
        lines += [f"   celery / stock end to end: {celery_ratio:.1f}x"]
    broker = report["_ceiling"]
    headroom = broker.end_to_end_per_s / stock.msgs_per_s if stock.msgs_per_s else float("inf")
    lines += [
        f"   broker alone (raw pika, {broker.n} persistent messages, no confirms, no database): "
        f"{broker.end_to_end_per_s:,.0f} msgs/s end to end = {headroom:.1f}x stock"
    ]
    if report["_steady"]:
        lines += [
            "",
            f"2. Steady load: {options.steady_n} creates at {options.steady_rate:g} writes/s, "
            "one per transaction",
            "",
            *_table(_pipeline_rows(report["_steady"])),
        ]
    burst = report["_burst"]
    if burst is not None:
        lines += [
            "",
            f"3. REST burst on `apis up` (project): {burst.total} POST /api/produtos/ from "
            f"{burst.clients} clients",
            "",
            f"   {burst.writes_per_s:,.0f} writes/s ({burst.write_seconds:.2f} s, "
            f"{burst.errors} errors); the feed had them all "
            f"{burst.complete_after_seconds * 1000:,.0f} ms after the last write returned",
        ]
    return "\n".join(lines)


def _ceiling_n(n: int) -> int:
    """Enough messages for a stable rate, few enough to take a couple of seconds."""
    return min(max(2 * n, 2000), 20000)


def _broker_url() -> str:
    env = PRODUTOS.env()
    return env.get("RABBITMQ_URL") or FEED.env().get("RABBITMQ_URL") or DEFAULT_RABBITMQ_URL


def _postgres_url() -> str:
    import os

    url = os.environ.get("DATABASE_URL", "")
    return url if url.startswith(("postgres://", "postgresql://")) else DEFAULT_POSTGRES


def main(options: BenchOptions) -> int:
    try:
        report = run(options)
    except BenchError as exc:
        print(f"apis bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if options.as_json:
        print(render_table(report, options), file=sys.stderr)
        print(json.dumps({key: value for key, value in report.items() if not key.startswith("_")}))
    else:
        print(render_table(report, options))
    return 0
