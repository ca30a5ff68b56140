"""`apis bench`: its flags (`add_arguments`), their validation and the run (`run`); wired into the
`apis` CLI by apis/cli.py."""

from __future__ import annotations

import argparse

HELP = "stock django-cqrs vs this project's pipeline, side by side"
DESCRIPTION = (
    "Replicate the same N products through stock django-cqrs, this project's "
    "pipeline (outbox, relay, batching consumer) and the Celery-task pipeline, each with "
    "fresh databases and queues, several runs each, beside the broker's own ceiling; report "
    "end-to-end msgs/s (median and spread) and lag p50/p99."
)


def add_arguments(bench: argparse.ArgumentParser) -> None:
    bench.add_argument("-n", type=int, default=20000, help="products per pipeline (20000)")
    bench.add_argument(
        "--runs", type=int, default=3, help="runs of each pipeline, throughput and steady load (3)"
    )
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
        "--burst", type=int, default=1200,
        help="REST creates of the burst run, with replication on then off (1200; 0 skips it)",
    )  # fmt: skip
    bench.add_argument(
        "--consumers", type=int, default=2, help="workers of the project's cqrs_consume (2)"
    )
    bench.add_argument(
        "--queue-type", choices=["quorum", "classic"],
        help="the project's queues (default: quorum where the broker supports it)",
    )  # fmt: skip
    bench.add_argument(
        "--pipelines", default="stock,project,celery",
        help="which pipelines, comma-separated (stock,project,celery); the peer outbox "
        "libraries: outbox-pattern, jaiminho, celery-outbox",
    )  # fmt: skip
    bench.add_argument("--keep", action="store_true", help="keep the work folder and its logs")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Validate the options (an error exits 2 through `parser`), run the bench; its exit code."""
    # The bench (pika, psycopg, the pipelines) is imported when it runs: `apis --help` and every
    # other subcommand build this parser too and need none of it.
    from apis_lab.bench.runner import ALL_PIPELINE_NAMES, BenchOptions, main

    chosen = tuple(name.strip() for name in args.pipelines.split(",") if name.strip())
    if not chosen or set(chosen) - set(ALL_PIPELINE_NAMES):
        parser.error(f"--pipelines: choose from {', '.join(ALL_PIPELINE_NAMES)}")
    if (
        min(args.n, args.batch, args.runs, args.consumers) < 1
        or min(args.burst, args.steady_rate) < 0
    ):
        parser.error(
            "-n, --batch, --runs and --consumers must be at least 1, --burst/--steady-rate >= 0"
        )
    return main(
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
