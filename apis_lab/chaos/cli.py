"""`apis chaos`: its flags (`add_arguments`), their validation and the run (`run`): options in,
report out; wired into the `apis` CLI by apis/cli.py."""

from __future__ import annotations

import argparse
import json
import sys

from apis_lab.chaos import kinds
from apis_lab.supervision import sigterm_as_interrupt

HELP = "the seeded fault suite against the real processes"
DESCRIPTION = (
    "Start a RabbitMQ node (behind proxies of its own), a Redis server and "
    "databases of its own (on PostgreSQL: a server of its own), run the whole ecosystem on "
    "them under a REST workload, and inject a seeded schedule of faults (broker restart, "
    "connections closed or silently black-holed, kill -9 and SIGSTOP of each process, "
    "broker and database paused or restarted, disk alarm, queue deleted, Redis down, "
    "poison and crash-looping messages, a locked replica table, a queue migration killed "
    "halfway). After every heal it checks that the replica converges to the master, "
    "nothing acknowledged is lost, the dead-letter queue holds only the injected messages "
    "and every process is alive, and measures the longest stall. Kinds that mean nothing "
    "for a run are skipped and listed. Exits 1 when an invariant broke."
)


def add_arguments(chaos: argparse.ArgumentParser) -> None:
    chaos.add_argument("--duration", type=float, default=120.0, help="seconds of faults (120)")
    chaos.add_argument("--seed", type=int, help="the schedule's seed (default: a random one)")
    chaos.add_argument("--json", action="store_true", help="last line: one JSON object")
    chaos.add_argument("--rounds", type=int, help="stop after this many rounds of every fault kind")
    chaos.add_argument(
        "--faults", help=f"comma-separated fault kinds (default all: {kinds.listed()})"
    )
    chaos.add_argument(
        "--database", choices=["sqlite", "postgres"], default="sqlite",
        help="SQLite files, or a PostgreSQL server of the suite's own (sqlite)",
    )  # fmt: skip
    chaos.add_argument(
        "--pipeline", default="project",
        choices=["project", "stock", "celery", "outbox-pattern", "jaiminho", "celery-outbox"],
        help="the pattern under test: this project's outbox pipeline (project), stock "
        "django-cqrs publishing on commit (stock), one Celery task per change (celery), or a "
        "peer outbox library (outbox-pattern, jaiminho, celery-outbox); only project must lose "
        "nothing (exit 1), for the others a loss is a measured result",
    )  # fmt: skip
    chaos.add_argument("--rate", type=float, default=30.0, help="REST writes per second (30)")
    chaos.add_argument(
        "--converge-timeout", type=float, default=90.0,
        help="seconds the replica has to converge after each heal (90)",
    )  # fmt: skip
    chaos.add_argument(
        "--cluster", type=int, default=1,
        help="RabbitMQ nodes (1); 3 makes a cluster (quorum queues, pause_minority) and adds "
        "node-loss and partition",
    )  # fmt: skip
    chaos.add_argument(
        "--consumers", type=int, default=1, help="workers of each cqrs_consume process (1)"
    )
    chaos.add_argument(
        "--consumer-processes", type=int, default=1, help="cqrs_consume processes on the queue (1)"
    )
    chaos.add_argument(
        "--relays", type=int, default=1, help="outbox relays: one publishes, the others stand by"
    )
    chaos.add_argument(
        "--quick", action="store_true",
        help="compact pacing for tests: the same schedule, holds x0.4, gaps of 0.3-0.8 s",
    )  # fmt: skip
    chaos.add_argument("--keep", action="store_true", help="keep the work folder and its logs")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Validate the options (an error exits 2 through `parser`), run the suite; its exit code."""
    # The suite (pika, psycopg, the processes) is imported when it runs: `apis --help` and every
    # other subcommand build this parser too and need none of it.
    from apis_lab.chaos.faults import FAULTS, SELF_TEST_FAULTS
    from apis_lab.chaos.pipelines import PIPELINE_NAMES, pipeline_class
    from apis_lab.chaos.runner import ChaosOptions, plan
    from apis_lab.chaos.runner import run as run_suite
    from apis_lab.databases import DatabaseUnavailable
    from apis_lab.rabbit_nodes import BrokerUnavailable
    from apis_lab.redis_server import RedisUnavailable
    from apis_lab.supervised_ecosystem import EcosystemError

    chosen = tuple(FAULTS)
    if args.faults:
        chosen = tuple(name.strip() for name in args.faults.split(",") if name.strip())
        unknown = [name for name in chosen if name not in FAULTS and name not in SELF_TEST_FAULTS]
        if unknown or not chosen:
            parser.error(f"unknown fault kinds {unknown}: choose from {', '.join(FAULTS)}")
    if min(args.duration, args.rate, args.converge_timeout) <= 0 or (args.rounds or 1) < 1:
        parser.error("--duration, --rate and --converge-timeout must be positive, --rounds >= 1")
    if min(args.cluster, args.consumers, args.consumer_processes, args.relays) < 1:
        parser.error("--cluster, --consumers, --consumer-processes and --relays must be >= 1")
    if args.pipeline not in PIPELINE_NAMES:
        parser.error(f"--pipeline {args.pipeline}: choose from {', '.join(PIPELINE_NAMES)}")
    options = ChaosOptions(
        duration=args.duration,
        seed=args.seed,
        rounds=args.rounds,
        faults=chosen,
        pipeline=args.pipeline,
        database=args.database,
        rate=args.rate,
        converge_timeout=args.converge_timeout,
        keep=args.keep,
        cluster=args.cluster,
        consumers=args.consumers,
        consumer_processes=args.consumer_processes,
        relays=args.relays,
        quick=args.quick,
    )
    pipeline = pipeline_class(args.pipeline)
    if pipeline.broker_plugins and args.cluster > 1:
        parser.error(f"--pipeline {args.pipeline} runs on one RabbitMQ node (--cluster 1)")
    applying, skipped = plan(options, pipeline.roles, pipeline.skips)
    if args.faults and not applying:
        parser.error(
            "no fault kind asked for applies to this run: "
            + "; ".join(f"{kind}: {why}" for kind, why in skipped.items())
        )
    progress = sys.stderr if args.json else sys.stdout
    # SIGTERM (a CI timeout, a supervisor) stops the suite the way Ctrl-C does: through its
    # clean-up, which stops the broker nodes, Redis and every process it started.
    sigterm_as_interrupt()
    try:
        report = run_suite(options, say=lambda line: print(line, file=progress, flush=True))
    except (BrokerUnavailable, RedisUnavailable, DatabaseUnavailable, EcosystemError) as exc:
        print(f"apis chaos: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("apis chaos: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    print(report.summary(), file=progress, flush=True)
    if args.json:
        print(json.dumps(report.as_dict()), flush=True)
    if not pipeline.must_not_lose:
        return 0  # stock django-cqrs and the Celery task promise nothing: a loss is a result
    return 0 if report.invariants_held and report.lost == 0 else 1
