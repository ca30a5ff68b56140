"""`uv run apis …`: the lab's own commands."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apis", description="APIs Ecosystem: run and measure the lab."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser(
        "up",
        help="migrate both services and run every process in the foreground",
        description="Apply both services' migrations, then run api_produtos, api_feed, the "
        "outbox relay and the feed consumer until Ctrl-C / SIGTERM.",
    )
    up.add_argument("--host", default="0.0.0.0", help="interface the APIs bind (0.0.0.0)")
    up.add_argument("--produtos-port", type=int, default=8001, help="api_produtos port (8001)")
    up.add_argument("--feed-port", type=int, default=8000, help="api_feed port (8000)")
    up.add_argument("--web-workers", type=int, default=2, help="gunicorn workers per API (2)")
    up.add_argument("--consumers", type=int, default=1, help="feed consumer workers (1)")

    bench = commands.add_parser(
        "bench",
        help="stock django-cqrs vs this project's pipeline, side by side",
        description="Replicate the same N products through stock django-cqrs and through this "
        "project's pipeline (outbox, relay, batching consumer), each with fresh databases and "
        "queues, and report end-to-end msgs/s and lag p50/p99.",
    )
    bench.add_argument("-n", type=int, default=3000, help="products per pipeline (3000)")
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
    bench.add_argument("--keep", action="store_true", help="keep the work folder and its logs")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        from apis.bench import BenchOptions
        from apis.bench import main as bench_main

        if args.n < 1 or args.batch < 1 or args.burst < 0 or args.steady_rate < 0:
            build_parser().error("-n and --batch must be at least 1, --burst/--steady-rate >= 0")
        sys.exit(
            bench_main(
                BenchOptions(
                    n=args.n,
                    database=args.database,
                    as_json=args.json,
                    rate=args.rate,
                    batch=args.batch,
                    steady_rate=args.steady_rate,
                    burst=args.burst,
                    keep=args.keep,
                )
            )
        )
    if args.command == "up":
        from apis.up import UpOptions, up

        sys.exit(
            up(
                UpOptions(
                    host=args.host,
                    produtos_port=args.produtos_port,
                    feed_port=args.feed_port,
                    web_workers=args.web_workers,
                    consumers=args.consumers,
                )
            )
        )
