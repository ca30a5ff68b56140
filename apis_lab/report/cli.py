"""`apis lab`: its flags (`add_arguments`) and the run (`run`); wired into the `apis` CLI by
apis/cli.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from apis_lab.supervision import sigterm_as_interrupt

HELP = "bench and chaos for every pattern, then an HTML report with figures"
DESCRIPTION = (
    "Run the bench and the fault suite against stock django-cqrs, this project's pipeline, "
    "the Celery task per change and the peer outbox libraries (django-outbox-pattern, "
    "django-jaiminho, django-celery-outbox), all with one fixed seed; write lab.json, the "
    "figures (PNG and SVG) and a self-contained index.html to --out. Prints the report's path "
    "last."
)


def add_arguments(lab: argparse.ArgumentParser) -> None:
    lab.add_argument(
        "--quick", action="store_true",
        help="a few minutes: bench n=2000 once, 40 s of four fault kinds per pattern",
    )  # fmt: skip
    lab.add_argument("--out", default="var/lab", help="the report's folder (var/lab)")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Measure, build the report, print its path last; the exit code."""
    # The bench, the suite and matplotlib are imported when it runs: `apis --help` needs none.
    from apis_lab.report.runner import LabOptions
    from apis_lab.report.runner import run as run_lab

    # SIGTERM stops the lab the way Ctrl-C does: through each step's clean-up.
    sigterm_as_interrupt()
    try:
        path = run_lab(
            LabOptions(quick=args.quick, out=Path(args.out)),
            write=lambda line: print(line, flush=True),
        )
    except KeyboardInterrupt:
        print("apis lab: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    except Exception as exc:  # one line, not a traceback: the bench's and the suite's errors
        print(f"apis lab: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(path.resolve(), flush=True)
    return 0
