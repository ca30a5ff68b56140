"""The faults the suite injects, each one a small class: what it breaks, how long it holds, how
it heals. `FAULTS` lists them by name; the schedule draws from it.

What each does to the pipeline and how it recovers is in CQRS.md ("Falhas e recuperação").
"""

from __future__ import annotations

import os
import random
import signal
import struct
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import orjson
import pika

from apis_lab.processes import wait_for

if TYPE_CHECKING:
    from apis_lab.chaos.runner import ChaosLab


@dataclass
class Injected:
    """What an injection did, for the report and for the checks after it heals."""

    detail: str
    dead_letters: tuple[str, ...] = ()  # message ids the dead-letter queue must now hold


class Fault:
    name: ClassVar[str]
    #: Only scheduled when the broker is a cluster.
    needs_cluster: ClassVar[bool] = False
    #: Writes made while it holds are checked for latency: the master must not wait for the
    #: broker.
    broker_outage: ClassVar[bool] = False
    #: Messages are lost on the broker by design (a deleted queue): a reconciliation repairs.
    needs_reconcile: ClassVar[bool] = False

    def hold(self, rng: random.Random) -> float:
        return rng.uniform(1.0, 3.0)

    def inject(self, lab: ChaosLab, rng: random.Random) -> Injected:
        raise NotImplementedError

    def heal(self, lab: ChaosLab) -> None:
        """Undo what inject broke (nothing, for faults the system must heal by itself)."""


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


class KillConsumer(Kill):
    """The `cqrs_consume` parent only: its workers must notice and stop on their own."""

    name = "kill-consumer"
    role = "consumer"
    whole_group = False


class KillCelery(Kill):
    """One of the Celery workers or beats (which one is drawn)."""

    name = "kill-celery"
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

    def inject(self, lab, rng):
        with lab.channel() as channel:
            channel.queue_delete(lab.eco.queue)
        return Injected(f"queue {lab.eco.queue} deleted")


class RedisDown(Fault):
    name = "redis-down"

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
        NodeLoss,
    )
}


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
