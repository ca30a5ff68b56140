"""The faults the suite injects, each one a small class: what it breaks, how long it holds, how
it heals. `FAULTS` lists them by name, in the order of `kinds.FAULT_KINDS` (what the CLI shows);
the schedule draws from it.

What each does to the pipeline and how it recovers is in CQRS.md ("Falhas e recuperação").
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import ClassVar

import orjson
import pika

from apis_lab.chaos.chaos_lab import ChaosLab
from apis_lab.chaos.crash_hook import MARKER
from apis_lab.chaos.kinds import FAULT_KINDS
from apis_lab.supervision import wait_for


@dataclass
class Injected:
    """What an injection did, for the report and for the checks after it heals."""

    detail: str
    dead_letters: tuple[str, ...] = ()  # message ids the dead-letter queue must now hold
    #: What shows the fault really happened (a process in state T, bytes swallowed…), for the
    #: report and the tests.
    evidence: dict = field(default_factory=dict)


@dataclass
class Healed:
    """What a heal saw: more evidence, and problems that are failures of the fault suite's
    procedure itself (an operator step that did not complete)."""

    evidence: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


class Fault:
    name: ClassVar[str]
    #: Only scheduled when the broker is a cluster.
    needs_cluster: ClassVar[bool] = False
    #: Only scheduled on one node (see the fault's docstring for why).
    needs_single_node: ClassVar[bool] = False
    #: Only scheduled on PostgreSQL runs (the lab's own server).
    needs_postgres: ClassVar[bool] = False
    #: Process roles of the pipeline the fault acts on: skipped when the pipeline has none.
    needs_roles: ClassVar[tuple[str, ...]] = ()
    #: Writes made while it holds are checked for latency: the master must not wait for the
    #: broker.
    broker_outage: ClassVar[bool] = False
    #: Messages are lost on the broker by design (a deleted queue): a reconciliation repairs.
    needs_reconcile: ClassVar[bool] = False

    def hold(self, rng: random.Random) -> float:
        return rng.uniform(1.0, 3.0)

    def inject(self, lab: ChaosLab, rng: random.Random) -> Injected:
        raise NotImplementedError

    def heal(self, lab: ChaosLab) -> Healed | None:
        """Undo what inject broke (nothing, for faults the system must heal by itself)."""
        return None

    def settled(self, lab: ChaosLab) -> dict:
        """Evidence known only once the replica converged (or the wait for it ended)."""
        return {}

    @classmethod
    def skip_reason(cls, *, cluster: bool, postgres: bool, roles: frozenset[str]) -> str | None:
        """Why this kind means nothing for a run, or None when it applies."""
        if cls.needs_cluster and not cluster:
            return "needs a RabbitMQ cluster (--cluster 3)"
        if cls.needs_single_node and cluster:
            return "one RabbitMQ node only"
        if cls.needs_postgres and not postgres:
            return "PostgreSQL runs only (--database postgres)"
        missing = [role for role in cls.needs_roles if role not in roles]
        if missing:
            return f"the pipeline has no {', '.join(missing)}"
        return None


class BrokerRestart(Fault):
    """`rabbitmqctl stop_app` … `start_app` (of one node of a cluster): its connections drop,
    new ones are refused."""

    name = "broker-restart"
    broker_outage = True

    def hold(self, rng):
        return rng.uniform(2.0, 6.0)

    def inject(self, lab, rng):
        self.node = rng.choice(lab.nodes)
        self.node.stop_app()
        return Injected(f"rabbit application stopped on {self.node.node}")

    def heal(self, lab):
        self.node.start_app()


class NodeLoss(Fault):
    """A cluster loses the node leading the replica's quorum queue: its Erlang VM halts, the
    queue elects another leader, clients connected there move to another node; later the node
    comes back and rejoins. Scheduled only with a cluster (`--cluster 3`)."""

    name = "node-loss"
    broker_outage = True
    needs_cluster = True

    def hold(self, rng):
        return rng.uniform(4.0, 8.0)

    def inject(self, lab, rng):
        self.node = lab.broker.leader(lab.eco.queue) or rng.choice(lab.nodes)
        self.node.halt()
        return Injected(f"node {self.node.node} (leader of {lab.eco.queue}) halted")

    def heal(self, lab):
        self.node.start()


class ConnectionsClosed(Fault):
    """Every AMQP connection closed by the broker (`rabbitmqctl close_all_connections`)."""

    name = "connections-closed"
    broker_outage = True

    def hold(self, rng):
        return 0.5

    def inject(self, lab, rng):
        for node in lab.nodes:
            node.close_all_connections("fault suite")
        return Injected("every AMQP connection closed by the broker")


class Kill(Fault):
    """kill -9 of one process (one of its role, when scaled out); an orchestrator starts it
    again after `hold`."""

    role: ClassVar[str]
    whole_group: ClassVar[bool] = True

    def inject(self, lab, rng):
        self.victim = rng.choice(lab.eco.named(self.role))
        pid = self.victim.pid
        self.victim.kill9(whole_group=self.whole_group)
        return Injected(f"kill -9 {self.victim.name} (pid {pid})")

    def heal(self, lab):
        self.victim.start()


class KillRelay(Kill):
    """A relay (the active one, or a standby when there are several)."""

    name = "kill-relay"
    role = "relay"
    needs_roles = ("relay",)


class KillConsumer(Kill):
    """The `cqrs_consume` parent only: its workers must notice and stop on their own."""

    name = "kill-consumer"
    role = "consumer"
    needs_roles = ("consumer",)
    whole_group = False


class KillCelery(Kill):
    """One of the Celery workers or beats (which one is drawn)."""

    name = "kill-celery"
    needs_roles = ("celery",)
    choices = ("produtos-worker", "produtos-beat", "feed-worker", "feed-beat")

    def inject(self, lab, rng):
        self.role = rng.choice(self.choices)
        return super().inject(lab, rng)


class KillChild(Fault):
    """kill -9 of a child that its parent must replace: nobody restarts it from outside."""

    parent: ClassVar[str]
    marker: ClassVar[bytes] = b""

    def hold(self, rng):
        return 0.5

    def inject(self, lab, rng):
        parent = rng.choice(lab.eco.named(self.pick(rng)))
        children = parent.children(self.marker)
        if not children:
            return Injected(f"{parent.name} had no child to kill")
        victim = rng.choice(sorted(children))
        os.kill(victim, signal.SIGKILL)
        return Injected(f"kill -9 a child of {parent.name} (pid {victim})")

    def pick(self, rng: random.Random) -> str:
        return self.parent


class KillConsumerWorker(KillChild):
    name = "kill-consumer-worker"
    parent = "consumer"
    needs_roles = ("consumer",)
    marker = b"spawn_main"


class KillWebWorker(KillChild):
    """A gunicorn worker of either API, in the middle of requests."""

    name = "kill-web-worker"

    def pick(self, rng):
        return rng.choice(("produtos", "feed"))


class QueueDeleted(Fault):
    """The replica's queue deleted (an operator, a broker losing it): the consumer is cancelled
    and must declare it again. What the queue held, and what was published while it did not
    exist, is gone from the broker by design; a reconciliation repairs the replica."""

    name = "queue-deleted"
    needs_reconcile = True
    needs_roles = ("consumer",)

    def inject(self, lab, rng):
        with lab.channel() as channel:
            channel.queue_delete(lab.eco.queue)
        return Injected(f"queue {lab.eco.queue} deleted")


class RedisDown(Fault):
    name = "redis-down"
    needs_roles = ("redis",)

    def hold(self, rng):
        return rng.uniform(2.0, 5.0)

    def inject(self, lab, rng):
        lab.redis.stop()
        return Injected("redis-server stopped")

    def heal(self, lab):
        lab.redis.start()


class Poison(Fault):
    """Two messages that can never be applied, from outside the pipeline: invalid data, and
    headers pika cannot decode. Each must end in the dead-letter queue, and only they."""

    name = "poison"
    needs_roles = ("consumer",)

    def hold(self, rng):
        return 0.5

    def inject(self, lab, rng):
        number = lab.next_poison()
        invalid_id, undecodable_id = f"chaos-poison-{number}-invalid", f"chaos-poison-{number}-raw"
        pk = 10**12 + number  # no product of the master has such a key
        with lab.channel() as channel:
            channel.confirm_delivery()
            channel.basic_publish(
                lab.eco.exchange,
                "produto",
                orjson.dumps(_payload(pk, estoque=-1)),
                pika.BasicProperties(delivery_mode=2, message_id=invalid_id),
            )
            channel.basic_publish(
                lab.eco.exchange,
                "produto",
                orjson.dumps(_payload(pk + 1)),
                _UndecodableProperties(undecodable_id),
            )
        return Injected("invalid data + undecodable headers", (invalid_id, undecodable_id))


class DatabaseLocked(Fault):
    """The replica's table locked for a few seconds: every apply waits or fails and is retried."""

    name = "db-lock"

    def hold(self, rng):
        return rng.uniform(3.0, 6.0)

    def inject(self, lab, rng):
        self._release = threading.Event()
        locked = threading.Event()

        def hold_lock() -> None:
            with lab.eco.database("feed").locked(table="feed_produtomirror"):
                locked.set()
                self._release.wait(60)

        self._thread = threading.Thread(target=hold_lock, daemon=True)
        self._thread.start()
        wait_for(locked.is_set, 10)
        return Injected("feed_produtomirror locked")

    def heal(self, lab):
        self._release.set()
        self._thread.join(15)


# --- gray failures: nothing dies, something stops answering ---------------------------------


def process_state(pid: int | None) -> str:
    """The state letter of a process in /proc (T: stopped), or "gone"."""
    if pid is None:
        return "gone"
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


class Blackhole(Fault):
    """Every broker connection of the pipeline — relay, consumer workers, Celery, the web
    processes' probes — silently dropped: the lab's proxy between them and the broker stops
    carrying bytes, with no FIN and no RST (a NAT or a load balancer that forgot the flows, a
    pulled cable). New connections get nowhere either while it holds; after the heal they flow
    again, and the old ones stay dead: each end has to notice on its own."""

    name = "blackhole"
    broker_outage = True

    def hold(self, rng):
        return rng.uniform(2.0, 6.0)

    def inject(self, lab, rng):
        self.swallowed_before = lab.proxies.swallowed
        killed = lab.proxies.blackhole()
        return Injected(
            f"{killed} broker connections black-holed (no FIN, no RST; new ones too while it "
            "holds)",
            evidence={"links_blackholed": killed},
        )

    def heal(self, lab):
        swallowed = lab.proxies.swallowed - self.swallowed_before
        lab.proxies.heal()
        return Healed({"bytes_swallowed": swallowed})


class Pause(Fault):
    """SIGSTOP, hold, SIGCONT: the process is there (its sockets open, its locks held) and does
    nothing — a frozen VM, a stop-the-world pause, a swapped-out machine."""

    def hold(self, rng):
        return rng.uniform(2.0, 6.0)

    def stop(self, pids: list[int], group: bool = False) -> dict:
        for pid in pids:
            (os.killpg if group else os.kill)(pid, signal.SIGSTOP)
        self.pids, self.group = pids, group
        # A stopped process shows T in /proc at once for the signalled one; its group a moment
        # later.
        wait_for(lambda: all(process_state(p) in ("T", "gone") for p in pids), 5, interval=0.02)
        return {"pids": pids, "states": [process_state(p) for p in pids]}

    def heal(self, lab):
        for pid in self.pids:
            # Gone if it was replaced meanwhile (a supervisor killed the paused process).
            with contextlib.suppress(ProcessLookupError):
                (os.killpg if self.group else os.kill)(pid, signal.SIGCONT)
        wait_for(lambda: all(process_state(p) != "T" for p in self.pids), 5, interval=0.02)
        return Healed({"states_after": [process_state(p) for p in self.pids]})


class PauseBroker(Pause):
    """The lab's RabbitMQ node (one of the cluster's) frozen: its Erlang VM SIGSTOPped."""

    name = "pause-broker"
    broker_outage = True

    def inject(self, lab, rng):
        self.node = rng.choice(lab.nodes)
        evidence = self.stop([self.node.pid()])
        return Injected(f"RabbitMQ node {self.node.node} SIGSTOPped", evidence=evidence)


class PauseRelay(Pause):
    """The active outbox relay (the one holding the relay lock) frozen, with its lock."""

    name = "pause-relay"
    needs_roles = ("relay",)

    def inject(self, lab, rng):
        relay = lab.active_relay(rng)
        evidence = self.stop([relay.pid], group=True)
        return Injected(f"{relay.name} (pid {relay.pid}) SIGSTOPped", evidence=evidence)


class PauseConsumerWorker(Pause):
    """One worker of `cqrs_consume` frozen, holding its prefetched, unacknowledged messages."""

    name = "pause-consumer-worker"
    needs_roles = ("consumer",)

    def inject(self, lab, rng):
        parent = rng.choice(lab.eco.named("consumer"))
        workers = sorted(parent.children(b"spawn_main"))
        if not workers:
            self.pids, self.group = [], False
            return Injected(f"{parent.name} had no worker to pause")
        victim = rng.choice(workers)
        evidence = self.stop([victim])
        return Injected(f"a worker of {parent.name} (pid {victim}) SIGSTOPped", evidence=evidence)


class PauseDatabase(Pause):
    """The lab's PostgreSQL server frozen: the postmaster and every backend SIGSTOPped (master
    and replica share the server, as they may in production)."""

    name = "pause-database"
    needs_postgres = True

    def inject(self, lab, rng):
        pids = lab.postgres.pause()
        self.pids, self.group = pids, False
        # A backend that was exiting when the server froze stays a zombie (Z: its postmaster,
        # stopped, cannot reap it) or is gone: it holds nothing, so it is no evidence either way.
        ended = ("gone", "Z")
        wait_for(lambda: all(process_state(p) in ("T", *ended) for p in pids), 5, interval=0.02)
        alive = [(p, state) for p in pids if (state := process_state(p)) not in ended]
        return Injected(
            f"PostgreSQL server SIGSTOPped ({len(pids)} processes)",
            evidence={"pids": [p for p, _ in alive], "states": [state for _, state in alive]},
        )


class DiskAlarm(Fault):
    """The broker runs short of disk (`rabbitmqctl set_disk_free_limit` far above what is
    free): it blocks every connection that publishes — relay, consumer (its retry and
    dead-letter copies), Celery — until the limit is back."""

    name = "disk-alarm"
    broker_outage = True

    def hold(self, rng):
        return rng.uniform(2.0, 5.0)

    def inject(self, lab, rng):
        self.node = rng.choice(lab.nodes)
        self.node.set_disk_alarm(True)
        raised = wait_for(lambda: "disk" in self.node.alarms(), 15, interval=0.1)
        return Injected(f"disk alarm on {self.node.node}", evidence={"alarm_raised": bool(raised)})

    def heal(self, lab):
        self.node.set_disk_alarm(False)
        cleared = wait_for(lambda: "disk" not in self.node.alarms(), 15, interval=0.1)
        healed = Healed({"alarm_cleared": bool(cleared)})
        if not cleared:
            healed.problems.append(f"the disk alarm on {self.node.node} did not clear")
        return healed


class PgRestart(Fault):
    """The lab's PostgreSQL server stopped (`pg_ctl stop -m fast`: clients disconnected; or
    `-m immediate`: as if it crashed, recovery at the start) and started again after `hold`."""

    name = "pg-restart"
    needs_postgres = True

    def hold(self, rng):
        return rng.uniform(1.0, 4.0)

    def inject(self, lab, rng):
        mode = rng.choice(("fast", "immediate"))
        before = lab.postgres.postmaster_pid()
        lab.postgres.stop_server(mode)
        down = wait_for(lambda: lab.postgres.postmaster_pid() is None, 30)
        return Injected(
            f"PostgreSQL server stopped (-m {mode})",
            evidence={"postmaster_before": before, "stopped": bool(down)},
        )

    def heal(self, lab):
        lab.postgres.start_server()
        ready = lab.postgres.wait_ready()
        healed = Healed({"postmaster_after": lab.postgres.postmaster_pid()})
        if not ready:
            healed.problems.append("the lab's PostgreSQL server did not come back")
        return healed


class CrashLoop(Fault):
    """A message that kills the consumer worker that reads it, every time (a segfault in a C
    extension, an out-of-memory kill on one huge message). The lab's consumer runs with a hook
    of the lab's own (`apis_lab/chaos/crash_hook`) that makes a worker SIGKILL itself on the
    marker; nothing of it is in the project's code. The message must end in the dead-letter
    queue (reason `redelivered`), and only it, while the rest of the queue flows."""

    name = "crash-loop"
    needs_roles = ("consumer",)

    def hold(self, rng):
        return 0.5

    def inject(self, lab, rng):
        number = lab.next_crash()
        message_id = f"chaos-crash-loop-{number}"
        self.deaths_before = lab.crash_hook_kills()
        pk = 2 * 10**12 + number  # no product of the master has such a key
        with lab.channel() as channel:
            channel.confirm_delivery()
            channel.basic_publish(
                lab.eco.exchange,
                "produto",
                orjson.dumps(_payload(pk, nome=f"{MARKER} {number}")),
                pika.BasicProperties(delivery_mode=2, message_id=message_id),
            )
        return Injected("a message that kills its consumer worker", (message_id,))

    def heal(self, lab):
        # A worker reads it within a moment; how often one died is known once it settled.
        wait_for(lambda: lab.crash_hook_kills() > self.deaths_before, 15, interval=0.1)

    def settled(self, lab):
        return {"worker_deaths": lab.crash_hook_kills() - self.deaths_before}


class MigrateKilled(Fault):
    """The operator moves the replica's queues to the other type, and the migration is killed
    at a random step: the procedure of CQRS.md — consumers stopped, `manage.py cqrs_queues
    migrate --to <type>`, `kill -9` after a random number of its progress lines, the command run
    again to completion, `CQRS_QUEUE_TYPE=<type>` in the feed's settings, consumers started.
    One node only: on a cluster the queues stay quorum (classic queues are not replicated)."""

    name = "migrate-killed"
    needs_single_node = True
    needs_roles = ("consumer",)

    def hold(self, rng):
        return 0.0

    def inject(self, lab, rng):
        eco = lab.eco
        began = time.monotonic()
        self.target = "classic" if lab.queue_type() == "quorum" else "quorum"
        for consumer in eco.named("consumer"):
            consumer.stop()
        wait_for(lambda: (eco.queue_state() or (0, 1))[1] == 0, 15)
        stopped = time.monotonic()
        # A whole run prints about 16 lines here (marker, holding queue, dead-letter queue, 4
        # retry tiers held, the queue deleted and declared again, 4 tiers and the queue moved
        # back, marker deleted): any of them, up to a run that finishes before the kill.
        steps = rng.randrange(0, 17)
        process = subprocess.Popen(
            eco.manage_argv("feed", "cqrs_queues", "migrate", "--to", self.target),
            cwd=eco.service_dir("feed"), env=eco.envs["feed"], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        lines: list[str] = []
        deadline = time.monotonic() + 60
        try:
            while len(lines) < steps and time.monotonic() < deadline:
                line = process.stdout.readline()
                if not line:
                    break  # finished (or failed) before the kill
                lines.append(line.rstrip())
            time.sleep(rng.uniform(0.0, 0.3))
            finished = process.poll() is not None
            if not finished:
                os.killpg(process.pid, signal.SIGKILL)
        finally:
            process.wait(timeout=30)
            process.stdout.close()
        when = (
            f"finished ({process.returncode}) before the kill"
            if finished
            else f"killed -9 after {len(lines)} progress lines"
        )
        return Injected(
            f"consumers stopped; cqrs_queues migrate --to {self.target} {when}",
            evidence={
                "to": self.target,
                "consumers_stopped_s": round(stopped - began, 2),
                "killed_after_s": round(time.monotonic() - stopped, 2),
                "killed": not finished,
                "progress_lines_before": len(lines),
                "last_line_before": lines[-1] if lines else None,
            },
        )

    def heal(self, lab):
        eco = lab.eco
        healed = Healed()
        began = time.monotonic()
        result = eco.manage("feed", "cqrs_queues", "migrate", "--to", self.target, timeout=180)
        healed.evidence["rerun_s"] = round(time.monotonic() - began, 2)
        healed.evidence["rerun"] = (result.stdout + result.stderr).strip().splitlines()[-1:]
        if result.returncode != 0:
            healed.problems.append(
                f"cqrs_queues migrate --to {self.target} re-run failed: "
                f"{(result.stdout + result.stderr).strip()[-300:]}"
            )
        else:
            lab.set_queue_type(self.target)
        for consumer in eco.named("consumer"):
            consumer.start()
        return healed


class Partition(Fault):
    """A node of the cluster cut off from the others while it keeps running (its Erlang cookie
    changed and its distribution links dropped; clients can still reach it). With
    `cluster_partition_handling = pause_minority` it pauses itself — its clients are
    disconnected and reconnect to the majority — and resumes and rejoins once it sees the
    others again. The node cut off is the leader of the replica's queue when there is one."""

    name = "partition"
    needs_cluster = True
    broker_outage = True

    def hold(self, rng):
        return rng.uniform(4.0, 8.0)

    def inject(self, lab, rng):
        self.node = lab.broker.leader(lab.eco.queue) or rng.choice(lab.nodes)
        self.others = [n for n in lab.nodes if n is not self.node]
        self.node.isolate()
        majority = self.others[0]
        apart = wait_for(
            lambda: (lab.broker.running_nodes(majority) or [self.node.node]).count(
                self.node.node) == 0, 20, interval=0.2,
        )  # fmt: skip
        return Injected(
            f"node {self.node.node} cut off from the others",
            evidence={"node": self.node.node, "majority_lost_it": bool(apart)},
        )

    def heal(self, lab):
        self.node.rejoin(self.others)
        everyone = len(lab.nodes)
        back = wait_for(
            lambda: all(len(lab.broker.running_nodes(n) or []) == everyone for n in lab.nodes),
            120, interval=0.5,
        )  # fmt: skip
        healed = Healed({"rejoined": bool(back)})
        if not back:
            healed.problems.append(f"node {self.node.node} did not rejoin the cluster")
        return healed


class CorruptReplica(Fault):
    """Not a fault of the world but of the replica itself: a row edited behind the consumer's
    back, which nothing repairs until a reconciliation. It proves the checks can fail: a run
    with it must report the replica diverged. Never in the default schedule."""

    name = "corrupt-replica"

    def hold(self, rng):
        return 0.0

    def inject(self, lab, rng):
        lab.eco.database("feed").execute(
            ["UPDATE feed_produtomirror SET nome = 'corrupted by the lab' "
             "WHERE id = (SELECT MIN(id) FROM feed_produtomirror)"]
        )  # fmt: skip
        return Injected("one replica row edited by hand")


#: Proves the suite's checks can fail; only when asked for by name.
SELF_TEST_FAULTS = {CorruptReplica.name: CorruptReplica}

FAULTS: dict[str, type[Fault]] = {
    fault.name: fault
    for fault in (
        BrokerRestart,
        ConnectionsClosed,
        KillRelay,
        KillConsumer,
        KillConsumerWorker,
        KillWebWorker,
        KillCelery,
        QueueDeleted,
        RedisDown,
        Poison,
        DatabaseLocked,
        Blackhole,
        PauseBroker,
        PauseRelay,
        PauseConsumerWorker,
        PauseDatabase,
        DiskAlarm,
        PgRestart,
        CrashLoop,
        MigrateKilled,
        NodeLoss,
        Partition,
    )
}
if list(FAULTS) != list(FAULT_KINDS):  # the CLI's help lists FAULT_KINDS: one list of kinds
    raise ImportError(f"kinds.FAULT_KINDS {list(FAULT_KINDS)} != FAULTS {list(FAULTS)}")


def _payload(pk: int, **overrides) -> dict:
    now = "2026-01-01 00:00:00+00:00"
    data = {
        "id": pk, "sku": f"POISON-{pk}", "nome": "poison", "descricao": "", "preco": "1.00",
        "estoque": 1, "ativo": True, "criado_em": now, "atualizado_em": now,
        "cqrs_revision": 0, "cqrs_updated": now,
    }  # fmt: skip
    data.update(overrides)
    return {
        "signal_type": "SAVE", "cqrs_id": "produto", "instance_data": data,
        "previous_data": None, "instance_pk": pk, "correlation_id": None, "retries": 0,
        "expires": None, "meta": None,
    }  # fmt: skip


class _UndecodableProperties(pika.BasicProperties):
    """Persistent, with a message id and a timestamp header in milliseconds (year 57,000):
    valid on the wire, but pika cannot decode it into a datetime."""

    def __init__(self, message_id: str) -> None:
        super().__init__(delivery_mode=2, message_id=message_id)

    def encode(self):
        flags = self.FLAG_HEADERS | self.FLAG_DELIVERY_MODE | self.FLAG_MESSAGE_ID
        key, millis = b"sent_at", int(time.time() * 1000)
        entry = bytes([len(key)]) + key + b"T" + struct.pack(">Q", millis)
        table = struct.pack(">I", len(entry)) + entry
        message_id = self.message_id.encode()
        return [
            struct.pack(">H", flags) + table + bytes([2]) + bytes([len(message_id)]) + message_id
        ]
