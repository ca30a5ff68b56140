"""The fault suite: a seeded schedule of faults against the whole ecosystem under a REST
workload, with the invariants checked after every heal.

```
start a RabbitMQ node, a Redis server and databases of its own; the ecosystem on them
workload on (creates, updates, deletes through the master's REST API)
for each fault of the schedule:
    let the workload run a little; inject; hold; heal
    pause the workload; wait for convergence; check the invariants; resume
one last round of writes, converge, check
```

The suite owns what the pipeline runs on — a RabbitMQ node (or cluster) with a TCP proxy in front
of each node (every process of the pipeline connects through it, so that `blackhole` can drop
their links silently), a Redis server, and SQLite files or a PostgreSQL server of its own — so
that it can stop, pause and cut them without touching the machine's.

Invariants, after every heal:
- **converged**: the replica's rows equal the master's (key, revision, every field) and the
  outbox backlog is 0, within `converge_timeout` of the heal — after a reconciliation where the
  fault loses messages on the broker by design (a deleted queue);
- **nothing lost**: every acknowledged write is on the master as acknowledged (and so, once
  converged, on the replica);
- **dead letters**: the dead-letter queue holds exactly the injected poison and crash-loop
  messages;
- **alive**: every process runs (those killed were restarted), the consumer has its workers and
  the queue its consumers, each API its gunicorn workers;
- **writes never wait for the broker**: while the broker is down, writes stay under
  `latency_bound`.

The schedule (which fault, in which order, how long it holds, the gaps between) comes from the
seed alone: the same seed injects the same faults in the same order.

Besides the time to converge, each fault's **stall**: the longest time an acknowledged write
waited for the replica, from the injection until convergence (see `stall`; CQRS.md defines it for
the reader).
"""

from __future__ import annotations

import contextlib
import itertools
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from apis_lab.chaos.chaos_lab import ChaosLab
from apis_lab.chaos.faults import FAULTS, SELF_TEST_FAULTS, Fault, Healed, Injected
from apis_lab.chaos.pipelines import (
    REPLICA_STATE_COUNTER,
    Setup,
    pipeline_class,
)
from apis_lab.chaos.workload import OK, REFUSED, UNCERTAIN, Ledger, Workload
from apis_lab.databases import Databases, PostgresServer
from apis_lab.proxy import BrokerProxies
from apis_lab.rabbit_nodes import RabbitCluster, RabbitNode
from apis_lab.redis_server import RedisServer
from apis_lab.supervised_ecosystem import API_KEY, Ecosystem
from apis_lab.supervision import wait_for

#: Retries fast enough that a locked table or a restart heals within seconds, and numerous
#: enough (≈ 70 s in all) that no fault of the schedule exhausts them.
LAB_ENV = {
    "CQRS_RETRY_BASE": "0.5",
    "CQRS_RETRY_FACTOR": "2",
    "CQRS_RETRY_CAP": "4",
    "CQRS_MAX_RETRIES": "20",
    "CQRS_RETRY_JITTER": "0.2",
    # Reconciliation is the suite's to run (after the faults that need it), not beat's.
    "RECONCILE_INTERVAL": "86400",
}
#: `--quick`: each hold this fraction of its draw.
QUICK_HOLDS = 0.4
#: Seconds between two samples of the report's timeline.
TIMELINE_EVERY = 0.5
COLUMNS = "id, cqrs_revision, sku, nome, descricao, preco, estoque, ativo"
CENT = Decimal("0.01")


@dataclass
class ChaosOptions:
    duration: float = 120.0
    seed: int | None = None
    rounds: int | None = None  # stop after this many rounds of every fault, if sooner
    faults: tuple[str, ...] = tuple(FAULTS)
    pipeline: str = "project"
    database: str = "sqlite"  # or postgres (a server of the suite's own)
    rate: float = 30.0  # writes per second, all clients together
    clients: int = 4
    converge_timeout: float = 90.0
    latency_bound: float = 2.0
    keep: bool = False
    cluster: int = 1  # RabbitMQ nodes; 3 makes a cluster (and schedules node-loss)
    consumers: int = 1  # workers of each cqrs_consume process
    consumer_processes: int = 1
    relays: int = 1  # one publishes, the others stand by (advisory lock / flock)
    #: Compact pacing (for the tests): the same draws, holds × 0.4 and gaps of 0.3–0.8 s.
    quick: bool = False


@dataclass
class FaultResult:
    number: int
    name: str
    detail: str
    held: float
    converge_seconds: float | None
    writes_during: int
    violations: list[str] = field(default_factory=list)
    #: The longest stretch without any change applied on the replica between the injection
    #: and the heal (whether or not writes were waiting).
    replication_gap: float | None = None
    #: The longest time writes were acknowledged and nothing was applied on the replica, from
    #: the injection until convergence (see `stall`), and its part after the heal.
    stall: float | None = None
    stall_after_heal: float | None = None
    evidence: dict = field(default_factory=dict)
    settled_at: float = 0.0  # monotonic: converged, or the wait for it ended
    injected_at: float = 0.0  # monotonic
    healed_at: float = 0.0  # monotonic
    #: Rows on the replica ≠ the master's when the wait for convergence ended that no lost
    #: acknowledged write explains (applied wrongly: out of order, a stale revision won).
    wrong: int = 0
    #: Not converged by the deadline (rows written off: later waits leave them out).
    stuck: bool = False

    def as_dict(self) -> dict:
        return {
            "number": self.number,
            "fault": self.name,
            "detail": self.detail,
            "held_s": round(self.held, 2),
            "converge_s": None
            if self.converge_seconds is None
            else round(self.converge_seconds, 3),
            "writes_during": self.writes_during,
            "replication_gap_s": _round(self.replication_gap),
            "stall_s": _round(self.stall),
            "stall_after_heal_s": _round(self.stall_after_heal),
            "wrong": self.wrong,
            "stuck": self.stuck,
            "evidence": self.evidence,
            "violations": self.violations,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass
class ChaosReport:
    seed: int
    database: str
    pipeline: str = "project"
    results: list[FaultResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # kind → why it means nothing here
    #: pk → the fault kind after whose heal an acknowledged write of it was first seen missing
    #: (on the master, or on the replica once the wait for convergence ended).
    missing_since: dict[int, str] = field(default_factory=dict)
    writes: int = 0
    uncertain: int = 0
    refused: int = 0
    lost: int = 0
    lost_sample: list[int] = field(default_factory=list)
    seconds: float = 0.0
    write_p50_ms: float = 0.0
    write_max_ms: float = 0.0
    outage_write_max_ms: float = 0.0
    violations: list[str] = field(default_factory=list)  # outside any fault (start, the end)
    #: Whether a lost write breaks the run (the project's pipeline) or is a measured result.
    must_not_lose: bool = True
    started_at: float = 0.0  # monotonic: the timeline's zero
    #: (s since the start, writes acknowledged so far, writes waiting for the replica, the
    #: oldest one's wait in s): sampled every `TIMELINE_EVERY` s.
    samples: list[tuple[float, int, int, float]] = field(default_factory=list)

    @property
    def faults(self) -> list[FaultResult]:
        return [r for r in self.results if r.name != "final"]

    @property
    def invariants_held(self) -> bool:
        return not self.violations and not any(r.violations for r in self.results)

    def max_stall(self) -> dict[str, float]:
        stalls: dict[str, float] = {}
        for result in self.faults:
            if result.stall is not None:
                stalls[result.name] = round(max(stalls.get(result.name, 0.0), result.stall), 3)
        return stalls

    def lost_by_fault(self) -> dict[str, int]:
        counts = dict.fromkeys(_count(r.name for r in self.faults), 0)
        for kind in self.missing_since.values():
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    def by_fault(self) -> dict[str, dict]:
        """Per fault kind: how often, writes acknowledged while it held, lost (acknowledged,
        never on the replica), applied wrongly, stuck (not converged by the deadline), the
        longest stall and the longest time to converge."""
        lost = self.lost_by_fault()
        kinds: dict[str, dict] = {}
        for result in self.faults:
            kind = kinds.setdefault(result.name, {
                "count": 0, "writes": 0, "lost": lost.get(result.name, 0), "wrong": 0,
                "stuck": 0, "max_stall_s": 0.0, "converge_max_s": None,
            })  # fmt: skip
            kind["count"] += 1
            kind["writes"] += result.writes_during
            kind["wrong"] += result.wrong
            kind["stuck"] += int(result.stuck)
            kind["max_stall_s"] = round(max(kind["max_stall_s"], result.stall or 0.0), 3)
            if result.converge_seconds is not None:
                kind["converge_max_s"] = round(
                    max(kind["converge_max_s"] or 0.0, result.converge_seconds), 3
                )
        return kinds

    def timeline(self) -> dict:
        """Each fault's window and the periodic samples, in seconds since the start."""

        def at(moment: float) -> float | None:
            return round(moment - self.started_at, 2) if moment else None

        return {
            "faults": [
                {
                    "fault": r.name,
                    "start_s": at(r.injected_at),
                    "heal_s": at(r.healed_at),
                    "settled_s": at(r.settled_at),
                }
                for r in self.results
            ],
            "samples": [list(sample) for sample in self.samples],
            "columns": ["t_s", "acknowledged", "waiting", "lag_s"],
        }

    def converge_stats(self) -> tuple[float | None, float | None]:
        times = [r.converge_seconds for r in self.faults if r.converge_seconds is not None]
        if not times:
            return None, None
        return statistics.median(times), max(times)

    def as_dict(self) -> dict:
        p50, worst = self.converge_stats()
        by_kind = _count(r.name for r in self.faults)
        return {
            "seed": self.seed,
            "pipeline": self.pipeline,
            "database": self.database,
            "faults": by_kind,
            "faults_total": len(self.faults),
            "faults_by_kind": by_kind,  # the same as "faults" (its name before the contract)
            "skipped": self.skipped,
            "writes": self.writes,
            "writes_uncertain": self.uncertain,
            "writes_refused": self.refused,
            "lost": self.lost,
            "lost_by_fault": self.lost_by_fault(),
            "lost_sample": self.lost_sample,
            "max_stall_s": self.max_stall(),
            "by_fault": self.by_fault(),
            "invariants_held": self.invariants_held,
            "converge_p50_s": None if p50 is None else round(p50, 3),
            "converge_max_s": None if worst is None else round(worst, 3),
            "write_p50_ms": round(self.write_p50_ms, 1),
            "write_max_ms": round(self.write_max_ms, 1),
            "broker_down_write_max_ms": round(self.outage_write_max_ms, 1),
            "seconds": round(self.seconds, 1),
            "violations": self.violations
            + [f"#{r.number} {r.name}: {v}" for r in self.results for v in r.violations],
            "schedule": [r.as_dict() for r in self.results],
            "timeline": self.timeline(),
        }

    def summary(self) -> str:
        p50, worst = self.converge_stats()
        kinds = ", ".join(f"{name} {count}" for name, count in _count(
            r.name for r in self.faults).items())  # fmt: skip
        stalls = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in sorted(
            self.max_stall().items(), key=lambda item: -item[1]))  # fmt: skip
        lines = [
            f"seed {self.seed} ({self.pipeline}, {self.database}), {self.seconds:.0f}s: "
            f"{len(self.faults)} faults ({kinds})",
            f"writes acknowledged {self.writes} (uncertain {self.uncertain}, refused "
            f"{self.refused}); write p50 {self.write_p50_ms:.1f} ms, max {self.write_max_ms:.0f} "
            f"ms, max while the broker was down {self.outage_write_max_ms:.0f} ms",
            "converged after each heal: "
            + ("-" if p50 is None else f"p50 {p50:.2f}s, max {worst:.2f}s"),
            "longest stall (an acknowledged write waiting) per kind: " + (stalls or "-"),
            "skipped: " + (", ".join(f"{k} ({why})" for k, why in self.skipped.items()) or "none"),
            f"lost {self.lost}"
            + (
                f" (e.g. {self.lost_sample}; by fault: "
                f"{ {k: n for k, n in self.lost_by_fault().items() if n} })"
                if self.lost
                else ""
            ),
            "per fault kind (acknowledged while held / lost / applied wrongly / stuck / longest "
            "stall / longest convergence):",
            *(
                f"  {kind}: {row['writes']} / {row['lost']} / {row['wrong']} / {row['stuck']} / "
                f"{row['max_stall_s']:.1f}s / "
                + ("-" if row["converge_max_s"] is None else f"{row['converge_max_s']:.1f}s")
                for kind, row in self.by_fault().items()
            ),
            "invariants: " + ("all held" if self.invariants_held else "BROKEN"),
        ]
        if not self.must_not_lose:
            lines[-1] = (
                f"{self.pipeline} promises nothing here: lost {self.lost} acknowledged writes "
                f"(a measured result; exit 0); checks that did not hold: "
                + ("none" if self.invariants_held else "see below")
            )
        lines += [f"  - {v}" for v in self.as_dict()["violations"]]
        return "\n".join(lines)


def _count(names) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return counts


class Schedule:
    """Rounds of every fault kind, each round in an order drawn from the seed."""

    def __init__(self, rng: random.Random, kinds: tuple[str, ...], rounds: int | None) -> None:
        self.rng, self.kinds, self.rounds = rng, kinds, rounds
        self.round, self._pending = 0, []

    def next(self) -> Fault | None:
        if not self._pending:
            if self.rounds is not None and self.round >= self.rounds:
                return None
            self.round += 1
            self._pending = list(self.kinds)
            self.rng.shuffle(self._pending)
        name = self._pending.pop(0)
        return (FAULTS.get(name) or SELF_TEST_FAULTS[name])()


def plan(
    options: ChaosOptions, roles: frozenset[str], skips: dict[str, str] | None = None
) -> tuple[tuple[str, ...], dict[str, str]]:
    """The kinds that apply to this run, and those skipped with why (`skips`: kinds that mean
    nothing for the pipeline although it has the roles they act on)."""
    kinds, skipped = [], {}
    for kind in options.faults:
        reason = (skips or {}).get(kind) or _fault(kind).skip_reason(
            cluster=options.cluster > 1, postgres=options.database == "postgres", roles=roles
        )
        if reason is None:
            kinds.append(kind)
        else:
            skipped[kind] = reason
    return tuple(kinds), skipped


def _fault(kind: str) -> type[Fault]:
    return FAULTS.get(kind) or SELF_TEST_FAULTS[kind]


# --- the run ----------------------------------------------------------------------------


def run(options: ChaosOptions, say: Callable[[str], None] = print) -> ChaosReport:
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(10**6)
    rng = random.Random(seed)
    pipeline = pipeline_class(options.pipeline)()
    started = time.monotonic()
    report = ChaosReport(
        seed=seed, database=options.database, pipeline=pipeline.name,
        must_not_lose=pipeline.must_not_lose, started_at=started,
    )  # fmt: skip
    kinds, report.skipped = plan(options, pipeline.roles, pipeline.skips)
    work = Path(tempfile.mkdtemp(prefix="apis-chaos-"))
    plain_say = say

    def say(line: str) -> None:
        plain_say(f"[{time.monotonic() - started:6.1f}s] {line}")

    broker = proxies = redis = postgres = eco = workload = databases = sampler = None
    try:
        what = f"a {options.cluster}-node RabbitMQ cluster" if options.cluster > 1 else (
            "a RabbitMQ node"
        )  # fmt: skip
        say(f"chaos: seed {seed}; starting {what} behind proxies, Redis"
            f"{', a PostgreSQL server' if options.database == 'postgres' else ''} and the "
            f"{pipeline.name} pipeline ({work})")  # fmt: skip
        if report.skipped:
            say("chaos: skipped (no meaning for this run): " + ", ".join(
                f"{kind} ({why})" for kind, why in report.skipped.items()))  # fmt: skip
        if options.cluster > 1:
            broker = RabbitCluster(options.cluster).start()
        else:
            broker = RabbitNode(plugins=pipeline.broker_plugins).start()
        proxies = BrokerProxies(broker.url).start()
        redis = RedisServer().start()
        if options.database == "postgres":
            postgres = PostgresServer(work / "postgres").start()
        databases = Databases(work, server_url=postgres.url if postgres else "", prefix="chaos")
        # In a cluster every queue must survive the loss of a node: Celery's too.
        env = {**LAB_ENV, **({"CELERY_QUEUE_TYPE": "quorum"} if options.cluster > 1 else {})}
        if isinstance(broker, RabbitNode) and broker.stomp_port:
            # A peer's STOMP link, through a proxy of its own: cut and black-holed with the rest.
            env["APIS_LAB_STOMP_PORT"] = str(proxies.add("127.0.0.1", broker.stomp_port).port)
        eco = pipeline.start(
            Setup(
                work, proxies.url, broker.url, redis.url, databases, env=env,
                consumers=options.consumers, consumer_processes=options.consumer_processes,
                relays=options.relays,
            )
        )  # fmt: skip
        lab = ChaosLab(broker, redis, eco, proxies=proxies, postgres=postgres, pipeline=pipeline)
        # Up means consuming too (the APIs answer first): a fault right away acts on every
        # connection of the pipeline.
        queue = pipeline.replica_queue(eco)
        wait_for(lambda: (eco.queue_state(queue) or (0, 0))[1] >= eco.queue_consumers, 60)
        workload = Workload(
            eco.produtos_url, API_KEY, rate=options.rate, clients=options.clients, seed=seed
        )
        sampler = ReplicationSampler(
            eco, workload.ledger, counter=pipeline.applied_counter, report=report
        ).start()
        workload.start()
        checker = Checker(lab, workload, options, report, sampler)
        say(f"chaos: ecosystem up; workload {options.rate:g} writes/s from {options.clients} "
            f"clients; faults for {options.duration:g}s")  # fmt: skip
        schedule = Schedule(rng, kinds, options.rounds)
        deadline = time.monotonic() + options.duration  # faults only: start-up not counted
        number = 0
        while kinds and time.monotonic() < deadline:
            fault = schedule.next()
            if fault is None:
                break
            number += 1
            gap = rng.uniform(1.0, 3.0)  # the workload runs on its own for a while
            time.sleep(0.3 + (gap - 1.0) / 4 if options.quick else gap)
            result = checker.inject_and_heal(number, fault, rng)
            report.results.append(result)
            say(_line(result))
        time.sleep(2.0)  # the pipeline still works after the last heal: new writes arrive
        final = checker.settle(number + 1, "final", "writes after the last heal", 0.0, None)
        report.results.append(final)
        say(_line(final))
    finally:
        if workload is not None:
            workload.stop()
            _tally(report, workload)
        if sampler is not None:
            sampler.stop()
        for part in (eco, proxies, redis, broker):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.stop()
        if postgres is not None:
            with contextlib.suppress(Exception):
                postgres.stop()
        elif databases is not None:
            with contextlib.suppress(Exception):
                databases.drop_all()
        if options.keep:
            say(f"chaos: logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        report.seconds = time.monotonic() - started
    return report


def _line(result: FaultResult) -> str:
    converged = (
        "did not converge"
        if result.converge_seconds is None
        else f"converged in {result.converge_seconds:.2f}s"
    )
    if result.stall is not None:
        converged += (
            f" (stalled at most {result.stall:.2f}s, {result.stall_after_heal or 0:.2f}s of it "
            "after the heal)"
        )
    status = "ok" if not result.violations else "BROKEN: " + "; ".join(result.violations)
    return (
        f"chaos: #{result.number} {result.name} — {result.detail} (held {result.held:.1f}s, "
        f"{result.writes_during} writes meanwhile): {converged}; {status}"
    )


def _tally(report: ChaosReport, workload: Workload) -> None:
    writes = workload.ledger.writes
    report.writes = sum(w.outcome == OK for w in writes)
    report.uncertain = sum(w.outcome == UNCERTAIN for w in writes)
    report.refused = sum(w.outcome == REFUSED for w in writes)
    latencies = sorted(w.seconds * 1000 for w in writes if w.outcome == OK)
    if latencies:
        report.write_p50_ms = statistics.median(latencies)
        report.write_max_ms = latencies[-1]


# --- the checks -------------------------------------------------------------------------


def _row(row: tuple) -> tuple:
    """A row of `COLUMNS`, comparable between master and replica and with a write's state."""
    return (row[0], row[1], row[2], row[3], row[4], Decimal(str(row[5])).quantize(CENT), row[6],
            bool(row[7]))  # fmt: skip


def _holds(row: tuple | None, state: dict | None) -> bool:
    """Whether a row (master or replica, as `Checker._rows` reads it) is the state a write
    left: gone after a delete, else the fields the write decided."""
    if state is None:
        return row is None
    return row is not None and (row[1], row[2], row[4], row[5]) == (
        state["sku"], state["nome"], Decimal(state["preco"]).quantize(CENT), state["estoque"],
    )  # fmt: skip


class ReplicationSampler:
    """Watches the replica every 50 ms: its change counter (bumped by every applied batch), to
    tell how long replication stood still during a fault; and every acknowledged write of the
    workload until the replica holds its state, to tell how long each one waited."""

    def __init__(
        self,
        eco: Ecosystem,
        ledger: Ledger | None = None,
        every: float = 0.05,
        counter: str = REPLICA_STATE_COUNTER,
        report: ChaosReport | None = None,
    ) -> None:
        self.db, self.ledger, self.every = eco.database("feed"), ledger, every
        self.counter, self.report = counter, report
        self.acknowledged = 0  # writes of the ledger acknowledged so far
        self._next_sample = 0.0
        self.changes: list[float] = []  # when the counter was seen to move
        #: pk → when its oldest write not yet on the replica was acknowledged.
        self.pending: dict[int, float] = {}
        #: (acknowledged, seen on the replica) of every write that arrived.
        self.waits: list[tuple[float, float]] = []
        self._cursor = 0  # writes of the ledger already looked at
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replication-sampler", daemon=True)

    def start(self) -> ReplicationSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        last = None
        while not self._stop.wait(self.every):
            try:
                value = self.db.scalar(self.counter)
                if value != last:
                    self.changes.append(time.monotonic())
                    last = value
            except Exception:  # nosec B110 # a sample missed, the next one comes
                pass  # locked or restarting: no news
            if self.ledger is not None:
                with contextlib.suppress(Exception):  # locked or restarting: next time
                    self._follow_writes()
            self._sample()

    def _sample(self) -> None:
        """A point of the report's timeline, every `TIMELINE_EVERY` s."""
        now = time.monotonic()
        if self.report is None or now < self._next_sample:
            return
        self._next_sample = now + TIMELINE_EVERY
        with self._lock:
            waiting = len(self.pending)
            oldest = min(self.pending.values(), default=now)
        self.report.samples.append(
            (round(now - self.report.started_at, 2), self.acknowledged, waiting,
             round(now - oldest, 3))
        )  # fmt: skip

    def forget(self, pks) -> None:
        """Stop following these writes (written off: not on the replica when the wait for
        convergence ended): they would count as a stall in every fault after."""
        with self._lock:
            for pk in pks:
                self.pending.pop(pk, None)

    def _follow_writes(self) -> None:
        ledger = self.ledger
        with ledger.lock:
            new = ledger.writes[self._cursor :]
            self._cursor = len(ledger.writes)
            uncertain = set(ledger.uncertain)
        with self._lock:
            for write in new:
                if write.outcome == OK:
                    self.acknowledged += 1
                if write.outcome == OK and write.pk is not None:
                    self.pending.setdefault(write.pk, write.started + write.seconds)
            for pk in uncertain & self.pending.keys():
                del self.pending[pk]  # the master alone says what it is: not followed
            waiting = sorted(self.pending)
        if not waiting:
            return
        with ledger.lock:
            expected = {pk: ledger.expected.get(pk) for pk in waiting}
        rows = {}
        for first in range(0, len(waiting), 500):
            found = self.db.fetchall(
                f"SELECT {COLUMNS} FROM feed_produtomirror WHERE id IN "  # nosec B608 # ints
                f"({', '.join(str(int(pk)) for pk in waiting[first : first + 500])})"
            )
            rows.update({row[0]: _row(row)[1:] for row in found})
        now = time.monotonic()
        with self._lock:
            for pk in waiting:
                if pk in self.pending and _holds(rows.get(pk), expected[pk]):
                    self.waits.append((self.pending.pop(pk), now))

    def longest_pause(self, start: float, end: float) -> float:
        """The longest stretch in [start, end] without a change."""
        moments = [start, *(t for t in self.changes if start < t < end), end]
        return max(b - a for a, b in itertools.pairwise(moments))

    def stall(self, start: float, end: float, heal: float) -> tuple[float, float]:
        """See `stall`: over the writes followed so far (those still waiting, until `end`)."""
        with self._lock:
            waits = list(self.waits) + [(acked, end) for acked in self.pending.values()]
        return stall(waits, start, end, heal)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def stall(
    waits: list[tuple[float, float]], start: float, end: float, heal: float
) -> tuple[float, float]:
    """The longest time, within [start, end], that an acknowledged write waited for the
    replica; and the longest part of such a wait after `heal`.

    `waits`: for each acknowledged write, when the master answered 2xx and when the replica was
    first seen (every 50 ms) holding its state or a later one (still waiting: `end`). Only the
    part of each wait inside the window counts: a write acknowledged before the injection and
    still waiting counts from the injection.
    """
    worst = after_heal = 0.0
    for acked, applied in waits:
        stop = min(applied, end)
        worst = max(worst, stop - max(acked, start))
        after_heal = max(after_heal, stop - max(acked, heal))
    return worst, after_heal


class Checker:
    def __init__(
        self,
        lab: ChaosLab,
        workload: Workload,
        options: ChaosOptions,
        report,
        sampler: ReplicationSampler | None = None,
    ) -> None:
        self.lab, self.workload, self.options, self.report = lab, workload, options, report
        self.sampler = sampler
        #: Rows that had not converged when a wait ended (a pipeline that loses writes): left
        #: out of the next waits, or every fault after would wait its whole timeout.
        self.written_off: set[int] = set()

    def inject_and_heal(self, number: int, fault: Fault, rng: random.Random) -> FaultResult:
        injected_at = time.monotonic()
        injected: Injected = fault.inject(self.lab, rng)
        self.lab.dead_letters.extend(injected.dead_letters)
        held = fault.hold(rng) * (QUICK_HOLDS if self.options.quick else 1.0)
        time.sleep(held)
        healed: Healed = fault.heal(self.lab) or Healed()
        healed_at = time.monotonic()
        result = self.settle(number, fault.name, injected.detail, healed_at - injected_at, fault)
        result.injected_at, result.healed_at = injected_at, healed_at
        result.evidence = {**injected.evidence, **healed.evidence, **fault.settled(self.lab)}
        result.violations = healed.problems + result.violations
        result.writes_during = len(self.workload.ledger.during(injected_at, healed_at))
        if self.sampler is not None:
            if result.converge_seconds is not None:
                # Writes are paused from the heal on: only the stretch before it counts.
                result.replication_gap = self.sampler.longest_pause(injected_at, healed_at)
            result.stall, result.stall_after_heal = self.sampler.stall(
                injected_at, result.settled_at, healed_at
            )
        if fault.broker_outage:
            outage = [w for w in self.workload.ledger.during(injected_at, healed_at)
                      if w.outcome == OK]  # fmt: skip
            worst = max((w.seconds for w in outage), default=0.0)
            self.report.outage_write_max_ms = max(self.report.outage_write_max_ms, worst * 1000)
            if worst > self.options.latency_bound:
                result.violations.append(
                    f"a write took {worst:.2f}s while the broker was down "
                    f"(bound {self.options.latency_bound:g}s)"
                )
        return result

    def settle(
        self, number: int, name: str, detail: str, held: float, fault: Fault | None
    ) -> FaultResult:
        """Pause the writes, wait for the replica to converge, check every invariant."""
        healed_at = time.monotonic()
        self.workload.pause()
        result = FaultResult(number, name, detail, held, None, 0)
        result.injected_at = result.healed_at = healed_at
        try:
            if fault is not None and fault.needs_reconcile:
                self._reconcile(result)
            converged = wait_for(self._converged, self.options.converge_timeout, interval=0.05)
            result.settled_at = time.monotonic()
            if converged:
                result.converge_seconds = result.settled_at - healed_at
            else:
                result.violations.append(self._divergence())
            blamed = name if fault is not None else self._last_fault_kind()
            result.violations += self._lost(blamed)
            if not converged:
                self._write_off(result)
            result.violations += self._dead_letters()
            result.violations += self._alive()
        finally:
            self.workload.resume()
        return result

    # --- convergence ----------------------------------------------------------------------

    def _rows(self, service: str, table: str) -> dict[int, tuple]:
        rows = self.lab.eco.database(service).fetchall(f"SELECT {COLUMNS} FROM {table}")  # nosec B608 # our table
        return {row[0]: _row(row)[1:] for row in rows}

    def master_rows(self) -> dict[int, tuple]:
        return self._rows("produtos", "produto_produto")

    def replica_rows(self) -> dict[int, tuple]:
        return self._rows("feed", "feed_produtomirror")

    def backlog(self) -> int:
        return self.lab.eco.database("produtos").scalar(
            "SELECT COUNT(*) FROM cqrs_outbox_outboxevent WHERE published_at IS NULL"
        )

    def _differing(self) -> list[int]:
        """Keys whose row differs between master and replica, but those written off."""
        master, replica = self.master_rows(), self.replica_rows()
        return sorted(
            pk for pk in master.keys() | replica.keys()
            if master.get(pk) != replica.get(pk) and pk not in self.written_off
        )  # fmt: skip

    def _converged(self) -> bool:
        try:
            return self.backlog() == 0 and not self._differing()
        except Exception:  # a database locked or restarting: not yet
            return False

    def _write_off(self, result: FaultResult) -> None:
        """Not converged by the deadline: stuck. What differs and no lost acknowledged write
        explains was applied wrongly. A pipeline that may lose writes goes on without those
        rows (each is counted once, here)."""
        result.stuck = True
        with contextlib.suppress(Exception):
            differ = set(self._differing())
            result.wrong = len(differ - self.report.missing_since.keys())
            if not self.lab.pipeline.must_not_lose:
                self.written_off |= differ
                if self.sampler is not None:
                    self.sampler.forget(differ)

    def _divergence(self) -> str:
        differ = self._differing()
        return (
            f"not converged after {self.options.converge_timeout:g}s: backlog {self.backlog()}, "
            f"{len(differ)} rows differ (e.g. {differ[:5]})"
        )

    def _reconcile(self, result: FaultResult) -> None:
        """Messages were lost on the broker by design: once the consumer is back and the outbox
        is drained, one reconciliation repairs the replica."""
        eco = self.lab.eco
        back = wait_for(lambda: (eco.queue_state() or (0, 0))[1] >= eco.queue_consumers, 30)
        drained = wait_for(lambda: self.backlog() == 0, 30)
        if not (back and drained):
            result.violations.append("the consumer or the relay did not come back")
            return
        outcome = eco.manage("produtos", "cqrs_reconcile", "--replica-url", eco.feed_url)
        if outcome.returncode != 0:
            result.violations.append(f"reconcile failed: {outcome.stderr.strip()[-300:]}")
        else:
            result.detail += f"; reconcile: {outcome.stdout.strip().splitlines()[-1]}"

    # --- invariants -----------------------------------------------------------------------

    def _last_fault_kind(self) -> str:
        faults = self.report.faults
        return faults[-1].name if faults else "none"

    def _lost(self, blamed: str) -> list[str]:
        """Acknowledged writes whose state is not on the master, or — once the wait for
        convergence is over — not on the replica. Each is blamed on the fault after whose heal
        it was first seen missing; `report.lost` is how many are missing now."""
        ledger = self.workload.ledger
        master, replica = self.master_rows(), self.replica_rows()
        with ledger.lock:
            expected = dict(ledger.expected)
            uncertain = set(ledger.uncertain)
        not_on_master, not_on_replica = [], []
        for pk, state in expected.items():
            if pk in uncertain:
                continue
            if not _holds(master.get(pk), state):
                not_on_master.append(pk)
            elif not _holds(replica.get(pk), state):
                not_on_replica.append(pk)
        missing = set(not_on_master) | set(not_on_replica)
        for pk in missing:
            self.report.missing_since.setdefault(pk, blamed)
        for pk in set(self.report.missing_since) - missing:  # late, not lost: it arrived
            del self.report.missing_since[pk]
        self.report.lost = len(missing)
        self.report.lost_sample = sorted(missing)[:10]
        problems = []
        if not_on_master:
            problems.append(
                f"{len(not_on_master)} acknowledged writes not on the master "
                f"(e.g. {sorted(not_on_master)[:5]})"
            )
        if not_on_replica:
            problems.append(
                f"{len(not_on_replica)} acknowledged writes not on the replica "
                f"(e.g. {sorted(not_on_replica)[:5]})"
            )
        return problems

    def _dead_letter_ids(self) -> list[str] | str:
        """The message ids in the dead-letter queue (left in place), or why it can't be read."""
        found = []
        try:
            with self.lab.channel() as channel:
                queue = self.lab.eco.dead_letter_queue
                depth = channel.queue_declare(queue, passive=True).method.message_count
                for _ in range(depth):
                    method, properties, _ = channel.basic_get(queue, auto_ack=False)
                    if method is None:
                        break
                    found.append(properties.message_id or "(no message id)")
                # Closing the channel gives them all back, in their places.
        except Exception as exc:
            return f"dead-letter queue unreadable: {exc!r}"
        return sorted(found)

    def _dead_letters(self) -> list[str]:
        """Every injected letter there and nothing else. A second copy of one is no violation:
        moving a queue (`cqrs_queues migrate`) is at least once, and a migration killed between
        a copy's confirm and the original's ack leaves both; retrying a letter twice is as
        harmless as any duplicate."""
        if not self.lab.pipeline.checks_dead_letters:
            return []  # another pipeline's dead letters: its own policy, no promise
        expected = sorted(set(self.lab.dead_letters))

        def held() -> list[str] | str:
            found = self._dead_letter_ids()
            return found if isinstance(found, str) else sorted(set(found))

        if wait_for(lambda: held() == expected, 15):
            return []
        found = self._dead_letter_ids()
        if isinstance(found, str):
            return [found]
        unexpected = sorted(set(found) - set(expected))
        missing = sorted(set(expected) - set(found))
        return [
            f"dead-letter queue holds {len(found)}, expected the {len(expected)} injected "
            f"(unexpected {unexpected[:5]}, missing {missing[:5]})"
        ]

    def _alive(self) -> list[str]:
        eco = self.lab.eco
        problems = [
            f"{p.name} is not running (exit code {p.exit_code()}): {p.tail(5)!r}"
            for p in eco.processes.values()
            if not p.alive()
        ]
        for consumer in eco.named("consumer") if self.lab.pipeline.consumer_workers else ():
            workers = wait_for(
                lambda c=consumer: len(c.children(b"spawn_main")) == eco.consumers, 15
            )
            if not workers:
                problems.append(
                    f"{consumer.name} has {len(consumer.children(b'spawn_main'))} workers, "
                    f"expected {eco.consumers}"
                )
        expected = eco.queue_consumers
        queue = self.lab.pipeline.replica_queue(eco)
        state = wait_for(lambda: (eco.queue_state(queue) or (0, -1))[1] == expected, 15)
        if not state:
            problems.append(
                f"queue {queue} has {(eco.queue_state(queue) or (0, None))[1]} consumers, "
                f"expected {expected}"
            )
        for api in ("produtos", "feed"):
            process = eco.processes[api]
            if not wait_for(lambda p=process: len(p.children()) >= eco.web_workers, 15):
                problems.append(f"{api} has {len(process.children())} gunicorn workers")
        return problems
