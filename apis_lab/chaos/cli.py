"""`apis chaos`: options in, report out."""

from __future__ import annotations

import argparse
import json
import signal
import sys

from apis_lab.chaos.faults import FAULTS, SELF_TEST_FAULTS
from apis_lab.chaos.pipelines import PIPELINES
from apis_lab.chaos.runner import ChaosOptions, plan, run
from apis_lab.databases import DatabaseUnavailable
from apis_lab.rabbit_nodes import BrokerUnavailable
from apis_lab.redis_server import RedisUnavailable
from apis_lab.supervised_ecosystem import EcosystemError


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    kinds = tuple(FAULTS)
    if args.faults:
        kinds = tuple(name.strip() for name in args.faults.split(",") if name.strip())
        unknown = [name for name in kinds if name not in FAULTS and name not in SELF_TEST_FAULTS]
        if unknown or not kinds:
            parser.error(f"unknown fault kinds {unknown}: choose from {', '.join(FAULTS)}")
    if min(args.duration, args.rate, args.converge_timeout) <= 0 or (args.rounds or 1) < 1:
        parser.error("--duration, --rate and --converge-timeout must be positive, --rounds >= 1")
    if min(args.cluster, args.consumers, args.consumer_processes, args.relays) < 1:
        parser.error("--cluster, --consumers, --consumer-processes and --relays must be >= 1")
    if args.pipeline not in PIPELINES:
        parser.error(
            f"--pipeline {args.pipeline}: the fault suite runs {', '.join(PIPELINES)} (not yet "
            "the others)"
        )
    options = ChaosOptions(
        duration=args.duration,
        seed=args.seed,
        rounds=args.rounds,
        faults=kinds,
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
    applying, skipped = plan(options, PIPELINES[args.pipeline].roles)
    if args.faults and not applying:
        parser.error(
            "no fault kind asked for applies to this run: "
            + "; ".join(f"{kind}: {why}" for kind, why in skipped.items())
        )
    progress = sys.stderr if args.json else sys.stdout
    # SIGTERM (a CI timeout, a supervisor) stops the suite the way Ctrl-C does: through its
    # clean-up, which stops the broker nodes, Redis and every process it started.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        report = run(options, say=lambda line: print(line, file=progress, flush=True))
    except (BrokerUnavailable, RedisUnavailable, DatabaseUnavailable, EcosystemError) as exc:
        print(f"apis chaos: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("apis chaos: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    print(report.summary(), file=progress, flush=True)
    if args.json:
        print(json.dumps(report.as_dict()), flush=True)
    return 0 if report.invariants_held and report.lost == 0 else 1
