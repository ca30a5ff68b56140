"""The bench's run: `BenchOptions` in, the pipelines measured round after round beside the broker's
ceiling, the report out (`main`); used by `apis bench` (apis_lab/bench/cli.py)."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pika.exceptions import AMQPError

from apis_lab.bench import ceiling, pipelines
from apis_lab.bench.burst import run_burst
from apis_lab.bench.pipelines import BenchError, CeleryTasks, Pipeline, Project, Stock, Workload
from apis_lab.bench.report import BenchReport, PipelineResult
from apis_lab.broker_objects import untyped_queue_type
from apis_lab.catalogue import FEED, PRODUTOS
from apis_lab.databases import Databases
from apis_lab.peers import PEERS, peer_module
from apis_lab.rabbit_nodes import BrokerUnavailable, RabbitNode
from django_tools.connectivity import Unreachable, amqp_channel, probe_rabbitmq
from django_tools.env import DEFAULT_RABBITMQ_URL, redact_url
from django_tools.exposure import is_loopback_address
from django_tools.replica.topology import CLASSIC, QUORUM, supports_quorum

DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/postgres"
#: The pipelines a bench runs by default, in the order the report shows them.
PIPELINE_NAMES = ("stock", "project", "celery")
#: Every pipeline `--pipelines` accepts: those and the peer outbox libraries (apis_lab/peers).
ALL_PIPELINE_NAMES = (*PIPELINE_NAMES, *PEERS)

__all__ = ["BenchError", "BenchOptions", "main", "run"]


@dataclass(frozen=True)
class BenchOptions:
    n: int = 20000
    runs: int = 3
    database: str = "sqlite"
    as_json: bool = False
    rate: float | None = None
    batch: int = 100
    steady_rate: float = 200.0
    steady_n: int = 1000
    burst: int = 1200
    burst_clients: int = 8
    consumers: int = 2  # cqrs_consume's default (see docs/desempenho.md)
    queue_type: str | None = None  # None: quorum where the broker supports it
    pipelines: tuple[str, ...] = PIPELINE_NAMES
    keep: bool = False


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


#: Seconds of writes at the steady rate before the measured ones (`Workload.warmup`).
STEADY_WARMUP_S = 1.0


def steady_warmup(rate: float) -> int:
    """The writes left out at the start of a steady run: one second's worth, at least 20."""
    return max(20, round(rate * STEADY_WARMUP_S))


def _pipeline(name: str, options: BenchOptions, stock_queue_type: str = CLASSIC) -> Pipeline:
    if name == "stock":
        return Stock(queue_type=stock_queue_type)
    if name == "project":
        return Project(consumers=options.consumers)
    if name in PEERS:
        return peer_module(name).Bench()
    return CeleryTasks()


def run(options: BenchOptions) -> BenchReport:
    plugins = tuple(sorted({plugin for name in options.pipelines
                            for plugin in _pipeline(name, options).broker_plugins}))  # fmt: skip
    broker_url = _broker_url()
    quorum_stock = _stock_wants_quorum_vhost(options, broker_url)
    if not plugins and not quorum_stock:
        return _run(options, broker_url, {})
    # A private node from the same rabbitmq-server, on this machine, for every pipeline and the
    # ceiling alike, so that their numbers stay comparable: when a pipeline needs a plugin the
    # machine's broker lacks (and the lab never enables there), and when the queues are quorum
    # but the broker's "/" makes stock's untyped queue classic (a vhost's default queue type is
    # set at its creation: the lab never recreates the machine's "/").
    why = ([f"with {', '.join(plugins)}"] if plugins else []) + (
        ['whose "/" makes untyped queues quorum (stock\'s too)'] if quorum_stock else []
    )
    node = RabbitNode(plugins=plugins)
    try:
        node.start()
        if quorum_stock:
            node.recreate_vhost(QUORUM)
    except BrokerUnavailable as exc:
        node.stop()
        if plugins:
            raise BenchError(f"a private RabbitMQ node {' and '.join(why)}: {exc}") from exc
        sys.stderr.write(
            f"bench: no private RabbitMQ node ({exc}); stock runs on a classic queue, as "
            f"django-cqrs declares it on {redact_url(broker_url)}\n"
        )
        return _run(options, broker_url, {})
    sys.stderr.write(
        f"bench: every pipeline and the ceiling on a private RabbitMQ node {' and '.join(why)} "
        f"(127.0.0.1:{node.port})\n"
    )
    try:
        broker_env = {"APIS_LAB_STOMP_PORT": str(node.stomp_port)} if node.stomp_port else {}
        return _run(options, node.url, broker_env)
    finally:
        node.stop()


def _stock_wants_quorum_vhost(options: BenchOptions, rabbitmq_url: str) -> bool:
    """Stock runs beside quorum queues on a broker whose "/" would make its queue classic:
    django-cqrs declares its queue without a type (and always on "/"), so only the vhost's
    default puts it on the same kind of queue as the others. Only for a broker on this machine:
    one elsewhere is what its user asked to measure, not a node of ours."""
    if "stock" not in options.pipelines:
        return False
    if any(name in PEERS for name in options.pipelines):
        # A peer library declares its queues without a type too, and on a quorum "/" gets
        # quorum queues it was not made for: django-outbox-pattern lost 23 of 20,000 messages
        # there with no fault at all. With a peer in the run, stock stays where a peer is.
        return False
    if not is_loopback_address(urlsplit(rabbitmq_url.split(",")[0]).hostname):
        return False
    try:
        queue_type = options.queue_type or _default_queue_type(rabbitmq_url)
        return queue_type == QUORUM and untyped_queue_type(rabbitmq_url) != QUORUM
    except (AMQPError, OSError):
        return False  # unreachable: `_run` says so


def _run(options: BenchOptions, rabbitmq_url: str, broker_env: dict[str, str]) -> BenchReport:
    try:
        probe_rabbitmq(rabbitmq_url, timeout=3)
    except Unreachable as exc:
        raise BenchError(
            f"RabbitMQ is not reachable at {redact_url(rabbitmq_url)} ({exc}): start the "
            "infrastructure with `docker compose up -d`"
        ) from exc
    queue_type = options.queue_type or _default_queue_type(rabbitmq_url)
    stock_queue_type = _stock_queue_type(options, rabbitmq_url)
    extra_env = {"CQRS_QUEUE_TYPE": queue_type, **broker_env}
    server = _postgres_url() if options.database == "postgres" else ""
    workdir = Path(tempfile.mkdtemp(prefix="apis-bench-"))
    databases = Databases(workdir, server_url=server, prefix=f"bench{uuid.uuid4().hex[:4]}")
    progress = Progress(enabled=True)
    report = BenchReport(
        n=options.n, database=options.database, queue_type=queue_type,
        consumers=options.consumers, stock_queue_type=stock_queue_type,
    )  # fmt: skip
    try:
        report.ceiling_n = _ceiling_n(options.n)
        throughput = Workload(n=options.n, batch=options.batch, rate=options.rate)
        results = {name: report.pipelines.setdefault(name, PipelineResult(name))
                   for name in options.pipelines}  # fmt: skip
        # Rounds, not one pipeline after the other: whatever drifts on a shared machine (the
        # broker compacting what the last run left, another process) weighs on every pipeline
        # and on the ceiling alike, so that their ratios can be trusted.
        for number in range(options.runs):
            round_ = f"{number + 1}/{options.runs}"
            progress.show(f"broker ceiling ({round_})…")
            try:
                measured = ceiling.measure(rabbitmq_url, report.ceiling_n, queue_type)
            except (RuntimeError, AMQPError, OSError) as exc:
                raise BenchError(f"measuring the broker's ceiling failed: {exc}") from exc
            report.ceiling.append(measured.end_to_end_per_s)
            for name in options.pipelines:
                progress.show(f"{name} ({round_})…")
                results[name].runs.append(
                    pipelines.run(
                        _pipeline(name, options, stock_queue_type), throughput, rabbitmq_url,
                        databases, workdir, progress, extra_env,
                    )
                )  # fmt: skip
            rates = ", ".join(
                f"{name} {results[name].runs[-1].msgs_per_s:,.0f}" for name in options.pipelines
            )
            progress.done(
                f"round {round_}: broker ceiling {measured.end_to_end_per_s:,.0f}, {rates} msgs/s"
            )
        progress.done(f"broker ceiling: {report.ceiling_spread} msgs/s end to end")
        for name, result in results.items():
            progress.done(
                f"{name}: {result.msgs_per_s} msgs/s end to end, lag p50 {result.lag(50):,.1f} "
                f"ms, p99 {result.lag(99):,.1f} ms"
            )
        if options.steady_rate:
            report.steady_n, report.steady_rate = options.steady_n, options.steady_rate
            report.steady_warmup = steady_warmup(options.steady_rate)
            steady = Workload(n=options.steady_n, batch=1, rate=options.steady_rate,
                              warmup=report.steady_warmup)  # fmt: skip
            # As many rounds as the throughput part (`--runs`), pipelines interleaved: a tail
            # latency on a shared machine varies from run to run, so the report gives the
            # median and the spread of each percentile, never one run's.
            for number in range(options.runs):
                for name in options.pipelines:
                    progress.show(f"{name} steady ({number + 1}/{options.runs})…")
                    report.steady.setdefault(name, PipelineResult(name)).runs.append(
                        pipelines.run(_pipeline(name, options, stock_queue_type), steady,
                                      rabbitmq_url,
                                      databases, workdir, progress, extra_env)
                    )  # fmt: skip
        if options.burst:
            # With replication on, then off (no outbox row): the write path's price of
            # replication is their ratio.
            report.burst, report.burst_off = (
                run_burst(
                    rabbitmq_url, databases, workdir, progress, options.burst,
                    options.burst_clients, extra_env, replication=replication,
                )
                for replication in (True, False)
            )  # fmt: skip
    finally:
        databases.drop_all()
        if not options.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return report


def _default_queue_type(rabbitmq_url: str) -> str:
    """What a new deployment of the project gets on this broker."""
    try:
        with amqp_channel(rabbitmq_url) as channel:
            return QUORUM if supports_quorum(channel) else CLASSIC
    except (AMQPError, OSError):
        return CLASSIC


def _stock_queue_type(options: BenchOptions, rabbitmq_url: str) -> str:
    """The type stock's queue gets on this broker (see `_stock_wants_quorum_vhost`)."""
    if "stock" not in options.pipelines:
        return CLASSIC
    try:
        return untyped_queue_type(rabbitmq_url)
    except (AMQPError, OSError) as exc:
        raise BenchError(f"asking the broker for its default queue type failed: {exc}") from exc


def _ceiling_n(n: int) -> int:
    """Enough messages for a stable rate, few enough to take a few seconds."""
    return min(max(2 * n, 2000), 40000)


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
    table = report.render(options.rate, options.batch)
    if options.as_json:
        print(table, file=sys.stderr)
        print(json.dumps(report.as_json()))
    else:
        print(table)
    return 0
