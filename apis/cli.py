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
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
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
