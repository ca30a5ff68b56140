"""`uv run apis …`: the lab's own commands."""

from __future__ import annotations

import argparse
import sys

from apis_lab.chaos import kinds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apis", description="APIs Ecosystem: run and measure the lab."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser(
        "up",
        help="migrate both services and run every process in the foreground",
        description="Apply both services' migrations, then run api_produtos, api_feed, the "
        "outbox relay, the feed consumer and each service's Celery worker and beat until "
        "Ctrl-C / SIGTERM.",
    )
    up.add_argument(
        "--host", default="127.0.0.1",
        help="interface the APIs bind (127.0.0.1: this machine only; 0.0.0.0 opens them)",
    )  # fmt: skip
    up.add_argument("--produtos-port", type=int, default=8001, help="api_produtos port (8001)")
    up.add_argument("--feed-port", type=int, default=8000, help="api_feed port (8000)")
    up.add_argument("--web-workers", type=int, default=4, help="gunicorn workers per API (4)")
    up.add_argument(
        "--consumers", type=int, default=1,
        help="feed consumer workers (1); with REPLICATION_MODE=celery, the feed Celery worker's",
    )  # fmt: skip
    up.add_argument(
        "--create-admin", action="store_true",
        help="create (or update) a superuser in both services' databases from APIS_ADMIN_USER / "
        "APIS_ADMIN_PASSWORD (default admin/admin, only on a loopback --host)",
    )  # fmt: skip

    reconcile = commands.add_parser(
        "reconcile",
        help="compare master and replica now and repair the drift",
        description="Run api_produtos' `manage.py cqrs_reconcile` (what Celery beat runs every "
        "RECONCILE_INTERVAL): compare every product by key, revision and content with the feed, "
        "and send syncs and deletes for what drifted.",
    )
    reconcile.add_argument("--replica-url", help="the feed's URL (default: FEED_URL or :8000)")
    reconcile.add_argument("--cqrs-id", help="one CQRS_ID (default: every master model)")
    reconcile.add_argument("--dry-run", action="store_true", help="report, send nothing")
    reconcile.add_argument("--json", action="store_true", help="one JSON report per line")
    reconcile.add_argument("--chunk", type=int, help="rows compared per page (1000)")

    chaos = commands.add_parser(
        "chaos",
        help="the seeded fault suite against the real processes",
        description="Start a RabbitMQ node (behind proxies of its own), a Redis server and "
        "databases of its own (on PostgreSQL: a server of its own), run the whole ecosystem on "
        "them under a REST workload, and inject a seeded schedule of faults (broker restart, "
        "connections closed or silently black-holed, kill -9 and SIGSTOP of each process, "
        "broker and database paused or restarted, disk alarm, queue deleted, Redis down, "
        "poison and crash-looping messages, a locked replica table, a queue migration killed "
        "halfway). After every heal it checks that the replica converges to the master, "
        "nothing acknowledged is lost, the dead-letter queue holds only the injected messages "
        "and every process is alive, and measures the longest stall. Kinds that mean nothing "
        "for a run are skipped and listed. Exits 1 when an invariant broke.",
    )
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
        help="the replication pipeline under test (project; stock and celery: not yet)",
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

    bench = commands.add_parser(
        "bench",
        help="stock django-cqrs vs this project's pipeline, side by side",
        description="Replicate the same N products through stock django-cqrs, this project's "
        "pipeline (outbox, relay, batching consumer) and the Celery-task pipeline, each with "
        "fresh databases and queues, several runs each, beside the broker's own ceiling; report "
        "end-to-end msgs/s (median and spread) and lag p50/p99.",
    )
    bench.add_argument("-n", type=int, default=20000, help="products per pipeline (20000)")
    bench.add_argument("--runs", type=int, default=3, help="runs of each pipeline (3)")
    bench.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    bench.add_argument("--json", action="store_true", help="last line: one JSON object")
    bench.add_argument(
        "--rate", type=float, help="writes per second (default: as fast as the writer can)"
    )
    bench.add_argument(
        "--batch", type=int, default=100, help="creates per master transaction in run 1 (100)"
    )
    bench.add_argument(
        "--steady-rate", type=float, default=200.0,
        help="writes/s of the steady-load run (200; 0 skips it)",
    )  # fmt: skip
    bench.add_argument(
        "--burst", type=int, default=1200, help="REST creates of the burst run (1200; 0 skips it)"
    )
    bench.add_argument(
        "--consumers", type=int, default=1, help="workers of the project's cqrs_consume (1)"
    )
    bench.add_argument(
        "--queue-type", choices=["quorum", "classic"],
        help="the project's queues (default: quorum where the broker supports it)",
    )  # fmt: skip
    bench.add_argument(
        "--pipelines", default="stock,project,celery",
        help="which pipelines, comma-separated (stock,project,celery)",
    )  # fmt: skip
    bench.add_argument("--keep", action="store_true", help="keep the work folder and its logs")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "reconcile":
        import subprocess

        from apis_lab.catalogue import PRODUTOS

        command = ["cqrs_reconcile"]
        if args.replica_url:
            command += ["--replica-url", args.replica_url]
        if args.chunk:
            command += ["--chunk", str(args.chunk)]
        if args.cqrs_id:
            command += ["--cqrs-id", args.cqrs_id]
        command += ["--dry-run"] * args.dry_run + ["--json"] * args.json
        result = subprocess.run(
            PRODUTOS.manage(*command), cwd=PRODUTOS.directory, env=PRODUTOS.env()
        )
        sys.exit(result.returncode)
    if args.command == "chaos":
        from apis_lab.chaos.cli import main as chaos_main

        sys.exit(chaos_main(args, build_parser()))
    if args.command == "bench":
        from apis_lab.bench import PIPELINE_NAMES, BenchOptions
        from apis_lab.bench import main as bench_main

        chosen = tuple(name.strip() for name in args.pipelines.split(",") if name.strip())
        if not chosen or set(chosen) - set(PIPELINE_NAMES):
            build_parser().error(f"--pipelines: choose from {', '.join(PIPELINE_NAMES)}")
        if (
            min(args.n, args.batch, args.runs, args.consumers) < 1
            or min(args.burst, args.steady_rate) < 0
        ):
            build_parser().error(
                "-n, --batch, --runs and --consumers must be at least 1, --burst/--steady-rate >= 0"
            )
        sys.exit(
            bench_main(
                BenchOptions(
                    n=args.n,
                    runs=args.runs,
                    database=args.database,
                    as_json=args.json,
                    rate=args.rate,
                    batch=args.batch,
                    steady_rate=args.steady_rate,
                    burst=args.burst,
                    consumers=args.consumers,
                    queue_type=args.queue_type,
                    pipelines=chosen,
                    keep=args.keep,
                )
            )
        )
    if args.command == "up":
        from apis.up import up
        from apis_lab.catalogue import EcosystemOptions

        sys.exit(
            up(
                EcosystemOptions(
                    host=args.host,
                    produtos_port=args.produtos_port,
                    feed_port=args.feed_port,
                    web_workers=args.web_workers,
                    consumers=args.consumers,
                ),
                create_admin_user=args.create_admin,
            )
        )
