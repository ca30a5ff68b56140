"""`uv run apis …`: the CLI's own subcommands (`up`, `reconcile`) and the wiring of the lab's
(`chaos`, `bench`, `lab`), whose flags, validation and run are their modules'
(apis_lab/*/cli.py)."""

from __future__ import annotations

import argparse
import sys

from apis_lab.bench import cli as bench_cli
from apis_lab.chaos import cli as chaos_cli
from apis_lab.report import cli as lab_cli

#: The lab's subcommands, in the order `apis --help` lists them: each module has `HELP`,
#: `DESCRIPTION`, `add_arguments(parser)` and `run(args, parser)` → exit code.
LAB_COMMANDS = {"chaos": chaos_cli, "bench": bench_cli, "lab": lab_cli}


def port(value: str) -> int:
    """A TCP port (1-65535), for argparse: anything else is its one-line usage error."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port (use 1-65535)")
    return number


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
    up.add_argument("--produtos-port", type=port, default=8001, help="api_produtos port (8001)")
    up.add_argument("--feed-port", type=port, default=8000, help="api_feed port (8000)")
    up.add_argument("--web-workers", type=int, default=4, help="gunicorn workers per API (4)")
    up.add_argument(
        "--consumers", type=int, default=2,
        help="feed consumer workers (2); with REPLICATION_MODE=celery, the feed Celery worker's",
    )  # fmt: skip
    up.add_argument(
        "--create-admin", action="store_true",
        help="create (or update) a superuser in both services' databases from APIS_ADMIN_USER / "
        "APIS_ADMIN_PASSWORD (default admin/admin, only on a loopback --host)",
    )  # fmt: skip
    up.add_argument(
        "--no-infra", action="store_true",
        help="never start RabbitMQ or Redis: exit at once when RABBITMQ_URL or REDIS_URL does "
        "not answer (default: on loopback, start private ones from the installed "
        "rabbitmq-server / redis-server, or with docker compose where Docker runs)",
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

    # The lab's subcommands: each module owns its flags and its run (apis_lab).
    for name, command in LAB_COMMANDS.items():
        command.add_arguments(
            commands.add_parser(name, help=command.HELP, description=command.DESCRIPTION)
        )
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
    if args.command in LAB_COMMANDS:
        sys.exit(LAB_COMMANDS[args.command].run(args, build_parser()))
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
                start_infra=not args.no_infra,
            )
        )
