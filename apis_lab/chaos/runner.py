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

Invariants, after every heal:
- **converged**: the replica's rows equal the master's (key, revision, every field) and the
  outbox backlog is 0, within `converge_timeout` of the heal — after a reconciliation where the
  fault loses messages on the broker by design (a deleted queue);
- **nothing lost**: every acknowledged write is on the master as acknowledged (and so, once
  converged, on the replica);
- **dead letters**: the dead-letter queue holds exactly the injected poison messages;
- **alive**: every process runs (those killed were restarted), the consumer has its workers and
  the queue its consumers, each API its gunicorn workers;
- **writes never wait for the broker**: while the broker is down, writes stay under
  `latency_bound`.

The schedule (which fault, in which order, how long it holds, the gaps between) comes from the
seed alone: the same seed injects the same faults in the same order.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from apis_lab.broker import RabbitCluster, RabbitNode
from apis_lab.chaos.faults import FAULTS, SELF_TEST_FAULTS, Fault, Injected
from apis_lab.chaos.workload import OK, REFUSED, UNCERTAIN, Workload
from apis_lab.databases import Databases
from apis_lab.ecosystem import API_KEY, Ecosystem
from apis_lab.processes import wait_for
from apis_lab.redis_server import RedisServer
from django_tools.broker import blocking_connection

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
COLUMNS = "id, cqrs_revision, sku, nome, descricao, preco, estoque, ativo"
CENT = Decimal("0.01")


@dataclass
class ChaosOptions:
    duration: float = 120.0
    seed: int | None = None
    rounds: int | None = None  # stop after this many rounds of every fault, if sooner
    faults: tuple[str, ...] = tuple(FAULTS)
    database: str = "sqlite"  # or postgres (DATABASE_URL's server, else the local one)
    rate: float = 30.0  # writes per second, all clients together
    clients: int = 4
    converge_timeout: float = 90.0
    latency_bound: float = 2.0
    keep: bool = False
    cluster: int = 1  # RabbitMQ nodes; 3 makes a cluster (and schedules node-loss)
    consumers: int = 1  # workers of each cqrs_consume process
    consumer_processes: int = 1
    relays: int = 1  # one publishes, the others stand by (advisory lock / flock)


@dataclass
class FaultResult:
    number: int
    name: str
    detail: str
    held: float
    converge_seconds: float | None
    writes_during: int
    violations: list[str] = field(default_factory=list)
    #: The longest time the replica applied nothing while writes were acknowledged, from the
    #: injection until convergence: how long writes stayed unreplicated.
    replication_gap: float | None = None

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
            "replication_gap_s": None
            if self.replication_gap is None
            else round(self.replication_gap, 3),
            "violations": self.violations,
        }


@dataclass
class ChaosReport:
    seed: int
    database: str
    results: list[FaultResult] = field(default_factory=list)
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

    @property
    def faults(self) -> list[FaultResult]:
        return [r for r in self.results if r.name != "final"]

    @property
    def invariants_held(self) -> bool:
        return not self.violations and not any(r.violations for r in self.results)

    def converge_stats(self) -> tuple[float | None, float | None]:
        times = [r.converge_seconds for r in self.faults if r.converge_seconds is not None]
        if not times:
            return None, None
        return statistics.median(times), max(times)

    def as_dict(self) -> dict:
        p50, worst = self.converge_stats()
        return {
            "seed": self.seed,
            "database": self.database,
            "faults": len(self.faults),
            "faults_by_kind": _count(r.name for r in self.faults),
            "writes": self.writes,
            "writes_uncertain": self.uncertain,
            "writes_refused": self.refused,
            "lost": self.lost,
            "lost_sample": self.lost_sample,
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
        }

    def summary(self) -> str:
        p50, worst = self.converge_stats()
        kinds = ", ".join(f"{name} {count}" for name, count in _count(
            r.name for r in self.faults).items())  # fmt: skip
        lines = [
            f"seed {self.seed} ({self.database}), {self.seconds:.0f}s: {len(self.faults)} faults "
            f"({kinds})",
            f"writes acknowledged {self.writes} (uncertain {self.uncertain}, refused "
            f"{self.refused}); write p50 {self.write_p50_ms:.1f} ms, max {self.write_max_ms:.0f} "
            f"ms, max while the broker was down {self.outage_write_max_ms:.0f} ms",
            "converged after each heal: "
            + ("-" if p50 is None else f"p50 {p50:.2f}s, max {worst:.2f}s"),
            f"lost {self.lost}" + (f" (e.g. {self.lost_sample})" if self.lost else ""),
            "invariants: " + ("all held" if self.invariants_held else "BROKEN"),
        ]
        lines += [f"  - {v}" for v in self.as_dict()["violations"]]
        return "\n".join(lines)


def _count(names) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return counts


# --- the lab the faults act on -------------------------------------------------------------


@dataclass
class ChaosLab:
    broker: RabbitNode | RabbitCluster
    redis: RedisServer
    eco: Ecosystem
    poison_sent: int = 0
    dead_letters: list[str] = field(default_factory=list)  # message ids the DLQ must hold

    @property
    def nodes(self) -> list[RabbitNode]:
        return self.broker.nodes if isinstance(self.broker, RabbitCluster) else [self.broker]

    def next_poison(self) -> int:
        self.poison_sent += 1
        return self.poison_sent

    @contextlib.contextmanager
    def channel(self) -> Iterator:
        connection = blocking_connection(self.broker.url, socket_timeout=5, stack_timeout=5)
        try:
            yield connection.channel()
        finally:
            with contextlib.suppress(Exception):
                connection.close()


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


# --- the run ----------------------------------------------------------------------------


def run(options: ChaosOptions, say: Callable[[str], None] = print) -> ChaosReport:
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(10**6)
    rng = random.Random(seed)
    report = ChaosReport(seed=seed, database=options.database)
    work = Path(tempfile.mkdtemp(prefix="apis-chaos-"))
    started = time.monotonic()
    plain_say = say

    def say(line: str) -> None:
        plain_say(f"[{time.monotonic() - started:6.1f}s] {line}")

    broker = redis = eco = workload = databases = sampler = None
    try:
        what = f"a {options.cluster}-node RabbitMQ cluster" if options.cluster > 1 else (
            "a RabbitMQ node"
        )  # fmt: skip
        say(f"chaos: seed {seed}; starting {what}, Redis and the ecosystem ({work})")
        broker = RabbitCluster(options.cluster).start() if options.cluster > 1 else RabbitNode()
        if isinstance(broker, RabbitNode):
            broker.start()
        redis = RedisServer().start()
        databases = Databases(work, server_url=_database_server(options.database), prefix="chaos")
        # In a cluster every queue must survive the loss of a node: Celery's too.
        env = {**LAB_ENV, **({"CELERY_QUEUE_TYPE": "quorum"} if options.cluster > 1 else {})}
        eco = Ecosystem(
            work, broker.url, redis.url, databases, extra_env=env,
            consumers=options.consumers, consumer_processes=options.consumer_processes,
            relays=options.relays,
        ).start()  # fmt: skip
        lab = ChaosLab(broker, redis, eco)
        sampler = ReplicationSampler(eco).start()
        workload = Workload(
            eco.produtos_url, API_KEY, rate=options.rate, clients=options.clients, seed=seed
        ).start()
        checker = Checker(lab, workload, options, report, sampler)
        say(f"chaos: ecosystem up; workload {options.rate:g} writes/s from {options.clients} "
            f"clients; faults for {options.duration:g}s")  # fmt: skip
        kinds = tuple(k for k in options.faults if options.cluster > 1 or not _needs_cluster(k))
        schedule = Schedule(rng, kinds, options.rounds)
        deadline = time.monotonic() + options.duration  # faults only: start-up not counted
        number = 0
        while time.monotonic() < deadline:
            fault = schedule.next()
            if fault is None:
                break
            number += 1
            time.sleep(rng.uniform(1.0, 3.0))  # the workload runs on its own for a while
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
        for part in (eco, redis, broker):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.stop()
        if databases is not None:
            with contextlib.suppress(Exception):
                databases.drop_all()
        if options.keep:
            say(f"chaos: logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        report.seconds = time.monotonic() - started
    return report


def _needs_cluster(kind: str) -> bool:
    fault = FAULTS.get(kind) or SELF_TEST_FAULTS[kind]
    return fault.needs_cluster


def _line(result: FaultResult) -> str:
    converged = (
        "did not converge"
        if result.converge_seconds is None
        else f"converged in {result.converge_seconds:.2f}s"
    )
    if result.replication_gap is not None:
        converged += f" (replication paused at most {result.replication_gap:.2f}s)"
    status = "ok" if not result.violations else "BROKEN: " + "; ".join(result.violations)
    return (
        f"chaos: #{result.number} {result.name} — {result.detail} (held {result.held:.1f}s, "
        f"{result.writes_during} writes meanwhile): {converged}; {status}"
    )


def _database_server(database: str) -> str:
    if database != "postgres":
        return ""
    import os

    url = os.environ.get("DATABASE_URL", "")
    return url if url.startswith(("postgres://", "postgresql://")) else (
        "postgres://postgres@127.0.0.1:5432/test"
    )  # fmt: skip


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


class ReplicationSampler:
    """Watches the replica's change counter (bumped by every applied batch) every 50 ms, to
    tell how long replication stood still during a fault."""

    def __init__(self, eco: Ecosystem, every: float = 0.05) -> None:
        self.db, self.every = eco.database("feed"), every
        self.changes: list[float] = []  # when the counter was seen to move
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replication-sampler", daemon=True)

    def start(self) -> ReplicationSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        last = None
        while not self._stop.wait(self.every):
            try:
                value = self.db.scalar(
                    "SELECT COALESCE(SUM(version), 0) FROM cqrs_replica_replicastate"
                )
            except Exception:  # nosec B112 # a sample missed, the next one comes
                continue  # locked or restarting: no news
            if value != last:
                self.changes.append(time.monotonic())
                last = value

    def longest_pause(self, start: float, end: float) -> float:
        """The longest stretch in [start, end] without a change."""
        moments = [start, *(t for t in self.changes if start < t < end), end]
        return max(b - a for a, b in itertools.pairwise(moments))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


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

    def inject_and_heal(self, number: int, fault: Fault, rng: random.Random) -> FaultResult:
        injected_at = time.monotonic()
        injected: Injected = fault.inject(self.lab, rng)
        self.lab.dead_letters.extend(injected.dead_letters)
        held = fault.hold(rng)
        time.sleep(held)
        fault.heal(self.lab)
        healed_at = time.monotonic()
        result = self.settle(number, fault.name, injected.detail, healed_at - injected_at, fault)
        result.writes_during = len(self.workload.ledger.during(injected_at, healed_at))
        if self.sampler is not None and result.converge_seconds is not None:
            # Writes are paused from the heal on: only the stretch before it counts.
            result.replication_gap = self.sampler.longest_pause(injected_at, healed_at)
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
        try:
            if fault is not None and fault.needs_reconcile:
                self._reconcile(result)
            converged = wait_for(self._converged, self.options.converge_timeout, interval=0.05)
            if converged:
                result.converge_seconds = time.monotonic() - healed_at
            else:
                result.violations.append(self._divergence())
            result.violations += self._lost()
            result.violations += self._dead_letters()
            result.violations += self._alive()
        finally:
            self.workload.resume()
        return result

    # --- convergence ----------------------------------------------------------------------

    def _rows(self, service: str, table: str) -> dict[int, tuple]:
        rows = self.lab.eco.database(service).fetchall(f"SELECT {COLUMNS} FROM {table}")  # nosec B608 # our table
        return {
            row[0]: (row[1], row[2], row[3], row[4], Decimal(str(row[5])).quantize(CENT), row[6],
                     bool(row[7]))
            for row in rows
        }  # fmt: skip

    def master_rows(self) -> dict[int, tuple]:
        return self._rows("produtos", "produto_produto")

    def replica_rows(self) -> dict[int, tuple]:
        return self._rows("feed", "feed_produtomirror")

    def backlog(self) -> int:
        return self.lab.eco.database("produtos").scalar(
            "SELECT COUNT(*) FROM cqrs_outbox_outboxevent WHERE published_at IS NULL"
        )

    def _converged(self) -> bool:
        try:
            return self.backlog() == 0 and self.master_rows() == self.replica_rows()
        except Exception:  # a database locked or restarting: not yet
            return False

    def _divergence(self) -> str:
        master, replica = self.master_rows(), self.replica_rows()
        differ = sorted(pk for pk in master.keys() | replica.keys()
                        if master.get(pk) != replica.get(pk))  # fmt: skip
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

    def _lost(self) -> list[str]:
        ledger = self.workload.ledger
        master = self.master_rows()
        lost = []
        with ledger.lock:
            expected = dict(ledger.expected)
            uncertain = set(ledger.uncertain)
        for pk, state in expected.items():
            if pk in uncertain:
                continue
            row = master.get(pk)
            if state is None:
                if row is not None:
                    lost.append(pk)  # an acknowledged delete is not on the master
            elif row is None or (row[1], row[2], row[4], row[5]) != (
                state["sku"], state["nome"], Decimal(state["preco"]).quantize(CENT),
                state["estoque"],
            ):  # fmt: skip
                lost.append(pk)
        self.report.lost = max(self.report.lost, len(lost))
        if lost:
            self.report.lost_sample = sorted(lost)[:10]
            return [f"{len(lost)} acknowledged writes not on the master (e.g. {lost[:5]})"]
        return []

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
        expected = sorted(self.lab.dead_letters)
        if wait_for(lambda: self._dead_letter_ids() == expected, 15):
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
        for consumer in eco.named("consumer"):
            workers = wait_for(
                lambda c=consumer: len(c.children(b"spawn_main")) == eco.consumers, 15
            )
            if not workers:
                problems.append(
                    f"{consumer.name} has {len(consumer.children(b'spawn_main'))} workers, "
                    f"expected {eco.consumers}"
                )
        expected = eco.queue_consumers
        state = wait_for(lambda: (eco.queue_state() or (0, -1))[1] == expected, 15)
        if not state:
            problems.append(
                f"queue {eco.queue} has {(eco.queue_state() or (0, None))[1]} consumers, "
                f"expected {expected}"
            )
        for api in ("produtos", "feed"):
            process = eco.processes[api]
            if not wait_for(lambda p=process: len(p.children()) >= eco.web_workers, 15):
                problems.append(f"{api} has {len(process.children())} gunicorn workers")
        return problems
