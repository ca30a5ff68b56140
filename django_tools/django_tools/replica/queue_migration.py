"""Moving a replica's queues to another type (classic ↔ quorum) without losing what they hold,
in steps that can each be interrupted (`kill -9`, a lost connection) and run again.

RabbitMQ cannot change a queue's type in place (nor its arguments: `--to quorum` of quorum
queues declared before the delivery limits declares them again with them, the same way): the
queue must be deleted and declared again,
and a deleted queue loses its messages and, while it does not exist, every event published for
it and every retry that expires into it (the retry tiers dead-letter to the replica's queue by
name). So (Q the replica's queue, Q.m its holding queue `<queue>.migrating`, T a retry tier):

1. the marker `<queue>.migrating-to-<type>` is declared: until it is deleted (step 8) nothing of
   the project declares or consumes the queues (`Topology.declare` refuses: consumers wait and
   retry, the dead-letter page and `cqrs_declare` say so in one line);
2. Q.m is declared with the new type and bound like Q: new events land there too;
3. the dead-letter queue moves on its own (to `<dlq>.migrating`, deleted, declared again, back);
4. each retry tier T of the old type: its retries move to `T.migrating`, which has T's delay but
   dead-letters into Q.m; T is deleted. No retry waits any more in a queue that expires into Q;
5. Q is unbound, its messages move to Q.m, it is deleted, declared with the new type and bound.
   Meanwhile events and expiring retries land in Q.m, which exists;
6. each tier is declared with the new type (expiring into Q) and `T.migrating` moved back;
7. Q.m is unbound and its messages moved back to Q; it is deleted;
8. the marker is deleted.

Every move publishes a message with a publisher confirm before it acknowledges the original, so a
kill leaves it in the source (given back unacknowledged), or in both (a duplicate: applying is
idempotent), never in neither. Each step looks at what the broker has and does only what is
left, so running the command again after a kill goes on from wherever it stopped. An event
published between 2 and 5 lands in both Q.m and Q, and is applied twice: harmless.

The consumers must be stopped: the migration refuses to start while Q or Q.m has consumers (and
once the marker exists, the project's consumers do not attach). A migration to one type must be
finished before one to the other starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from django_tools.replica.topology import QUORUM, Topology, supports_quorum

#: Seconds a quorum queue is left alone, once empty, before it is deleted. Its at-least-once
#: dead-lettering (a retry tier's expired retries, the replica's queue's limit) keeps a message
#: in the queue until the target confirms it, where no count shows it; deleting the queue then
#: drops it. The broker's own dead-letter worker confirms in milliseconds: this is the margin.
QUORUM_SETTLE_SECONDS = 0.2


class MigrationRefused(Exception):
    """The migration cannot run now; the message says why and what to do."""


def queue_state(connection: BlockingConnection, queue: str) -> tuple[int, int] | None:
    """(messages, consumers) of a queue, or None when it does not exist."""
    channel = connection.channel()
    try:
        method = channel.queue_declare(queue, passive=True).method
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return None
        raise
    with contextlib.suppress(Exception):
        channel.close()
    return method.message_count, method.consumer_count


def migrate(
    connection: BlockingConnection,
    topology: Topology,
    to_type: str,
    say: Callable[[str], None] = lambda line: None,
    checkpoint: Callable[[str], None] = lambda where: None,
) -> int:
    """Move every queue of the replica to `to_type`, or finish a migration to it that was
    interrupted; returns how many messages this run put (back) into the re-declared queues.
    `say` gets a line after each step; `checkpoint` is called after each step and after each
    message copied and not yet acknowledged (where a test interrupts it)."""
    # Every setting carries over (the delivery limit among them): only the type changes.
    target = dataclasses.replace(topology, queue_type=to_type)
    from django_tools.replica.dead_letters import reader_lock

    # No reader of the dead letters meanwhile: one holds a letter while it moves it, which the
    # move of the dead-letter queue would not see before deleting the queue.
    with reader_lock(connection, topology):
        return _Migration(connection, target, to_type, say, checkpoint).run()


class _Migration:
    def __init__(self, connection, target: Topology, to_type: str, say, checkpoint) -> None:
        self.connection = connection
        self.target = target
        self.to_type = to_type
        self._say = say
        self.checkpoint = checkpoint
        self.main = target.queue
        self.holding = Topology.migrating(self.main)
        self.marker = target.migration_marker(to_type)
        self.tiers = [target.retry_queue(tier) for tier in target.policy.tiers()]

    def say(self, line: str) -> None:
        self._say(line)
        self.checkpoint(line)

    # --- the plan ------------------------------------------------------------------------

    def run(self) -> int:
        underway = self.target.migration_in_progress(self.connection)
        if underway not in (None, self.to_type):
            raise MigrationRefused(
                f"a migration of {self.main} to {underway} is not finished (marker queue "
                f"{self.target.migration_marker(underway)}): finish it first with `manage.py "
                f"cqrs_queues migrate --to {underway}`"
            )
        self.refuse_consumers()
        self.target.ensure_exchange(self.connection)  # passive first: the replica may only read it
        if underway is None:
            if self.finished():
                self.say(f"every queue of {self.main} is {self.to_type} already")
                return 0
            self.declare_marker()
        else:
            self.say(f"marker {self.marker} found: going on with the unfinished migration")
            if self.finished():  # interrupted right before its last step
                return self.delete_marker(0)
        moved = 0
        self.hold_main()
        moved += self.migrate_alone(self.target.dead_letter_queue)
        for tier in self.tiers:
            self.hold_tier(tier)
        self.redeclare_main()
        for tier in self.tiers:
            moved += self.release_tier(tier)
        moved += self.release_main()
        return self.delete_marker(moved)

    def delete_marker(self, moved: int) -> int:
        self.channel().queue_delete(self.marker)
        self.say(f"marker {self.marker} deleted: the migration is finished")
        return moved

    def refuse_consumers(self) -> None:
        for queue in (self.main, self.holding):
            state = queue_state(self.connection, queue)
            if state is not None and state[1]:
                raise MigrationRefused(
                    f"queue {queue} has {state[1]} consumers: stop the replica's consumers "
                    "(cqrs_consume) first, then run the migration again"
                )

    def finished(self) -> bool:
        """Nothing left to do: every queue exists with the new type, none is held."""
        queues = [self.main, self.target.dead_letter_queue, *self.tiers]
        return not any(self.exists(Topology.migrating(queue)) for queue in queues) and not any(
            self.stale(queue, self.type_of(queue)) or not self.exists(queue) for queue in queues
        )

    def stale(self, queue: str, current: str | None) -> bool:
        """`queue` exists and only a new declare gives it what it must have: another type, or
        the same without the arguments it has now (a quorum queue declared before the delivery
        limits). RabbitMQ changes neither in place."""
        return current is not None and (
            current != self.to_type or not self.target.up_to_date(self.connection, queue, current)
        )

    def declare_marker(self) -> None:
        # Replicated where the broker can (a marker on a node that is down would look absent).
        marker_type = QUORUM if supports_quorum(self.channel()) else "classic"
        self.channel().queue_declare(
            self.marker, durable=True, arguments={"x-queue-type": marker_type}
        )
        try:
            self.refuse_consumers()  # one that attached between the first look and the marker
        except MigrationRefused:
            self.channel().queue_delete(self.marker)
            raise
        self.say(
            f"marker {self.marker} declared: consumers, the dead-letter page and cqrs_declare "
            "wait until the migration is finished"
        )

    # --- the replica's queue -------------------------------------------------------------

    def hold_main(self) -> None:
        channel = self.channel()
        if not self.exists(self.holding):
            channel.queue_declare(
                self.holding, durable=True, arguments=self.target.arguments(self.main, self.to_type)
            )
        for key in self.keys(self.main):
            channel.queue_bind(self.holding, self.target.exchange, routing_key=key)
        self.say(f"{self.holding} declared ({self.to_type}) and bound like {self.main}")

    def redeclare_main(self) -> None:
        current = self.type_of(self.main)
        channel = self.channel()
        if self.stale(self.main, current):
            for key in self.keys(self.main):
                channel.queue_unbind(self.main, self.target.exchange, routing_key=key)
            count = self.move(self.main, self.holding)
            self.delete_empty(self.main)
            self.say(f"{self.main}: {count} messages held in {self.holding}; {self.main} deleted")
            current = None
        channel = self.channel()
        if current is None:
            channel.queue_declare(
                self.main, durable=True, arguments=self.target.arguments(self.main, self.to_type)
            )
        for key in self.keys(self.main):
            channel.queue_bind(self.main, self.target.exchange, routing_key=key)
        self.say(f"{self.main}: declared as {self.to_type} and bound")

    def release_main(self) -> int:
        if not self.exists(self.holding):
            return 0
        channel = self.channel()
        for key in self.keys(self.main):
            channel.queue_unbind(self.holding, self.target.exchange, routing_key=key)
        count = self.move(self.holding, self.main)
        self.delete_empty(self.holding)
        self.say(f"{self.main}: now {self.to_type}, {count} messages moved back")
        return count

    # --- the retry tiers -----------------------------------------------------------------

    def tier_holding_arguments(self, tier: str) -> dict:
        """A tier's arguments with the new type, expiring into the replica's holding queue."""
        arguments = self.target.arguments(tier, self.to_type)
        arguments["x-dead-letter-exchange"] = ""
        arguments["x-dead-letter-routing-key"] = self.holding
        return arguments

    def hold_tier(self, tier: str) -> None:
        current = self.type_of(tier)
        if not self.stale(tier, current):
            return
        held = Topology.migrating(tier)
        state = queue_state(self.connection, tier)
        if state is not None and state[0] == 0 and not self.exists(held):
            self.delete_empty(tier)
            self.say(f"{tier}: empty, deleted")
            return
        if not self.exists(held):
            self.channel().queue_declare(
                held, durable=True, arguments=self.tier_holding_arguments(tier)
            )
        count = self.move(tier, held)
        self.delete_empty(tier)
        self.say(f"{tier}: {count} retries held in {held} (expiring into {self.holding}); deleted")

    def release_tier(self, tier: str) -> int:
        if not self.exists(tier):
            self.channel().queue_declare(
                tier, durable=True, arguments=self.target.arguments(tier, self.to_type)
            )
        held = Topology.migrating(tier)
        if not self.exists(held):
            self.say(f"{tier}: {self.to_type}")
            return 0
        count = self.move(held, tier)
        self.delete_empty(held)
        self.say(f"{tier}: now {self.to_type}, {count} retries moved back")
        return count

    # --- a queue nothing expires into (the dead-letter queue) ----------------------------

    def migrate_alone(self, queue: str) -> int:
        held = Topology.migrating(queue)
        keys = self.keys(queue)
        current = self.type_of(queue)
        if self.stale(queue, current):
            state = queue_state(self.connection, queue)
            if state is not None and state[0] == 0 and not self.exists(held):
                self.delete_empty(queue)
            else:
                channel = self.channel()
                if not self.exists(held):
                    channel.queue_declare(
                        held, durable=True, arguments=self.target.arguments(queue, self.to_type)
                    )
                for key in keys:
                    channel.queue_bind(held, self.target.exchange, routing_key=key)
                    channel.queue_unbind(queue, self.target.exchange, routing_key=key)
                count = self.move(queue, held)
                self.delete_empty(queue)
                self.say(f"{queue}: {count} messages held in {held}; {queue} deleted")
            current = None
        channel = self.channel()
        if current is None:
            channel.queue_declare(
                queue, durable=True, arguments=self.target.arguments(queue, self.to_type)
            )
        for key in keys:
            channel.queue_bind(queue, self.target.exchange, routing_key=key)
        if not self.exists(held):
            self.say(f"{queue}: {self.to_type}")
            return 0
        for key in keys:
            channel.queue_unbind(held, self.target.exchange, routing_key=key)
        count = self.move(held, queue)
        self.delete_empty(held)
        self.say(f"{queue}: now {self.to_type}, {count} messages moved back")
        return count

    # --- on the broker -------------------------------------------------------------------

    def channel(self) -> BlockingChannel:
        # A channel of its own for each step: RabbitMQ 3.10 keeps a channel's idea of a queue's
        # type, and a channel that used the old queue crashes publishing to the new one.
        return self.connection.channel()

    def exists(self, queue: str) -> bool:
        return queue_state(self.connection, queue) is not None

    def type_of(self, queue: str) -> str | None:
        return self.target.existing_type(self.connection.channel(), queue)

    def keys(self, queue: str) -> list[str]:
        return [key for bound, key in self.target.bindings() if bound == queue]

    def delete_empty(self, queue: str) -> None:
        """Delete a queue that was just emptied (unbound first, so nothing comes in any more);
        quorum queues do not take `queue.delete(if_empty)`, so look, then delete."""
        if self.type_of(queue) == QUORUM:
            time.sleep(QUORUM_SETTLE_SECONDS)  # its pending dead letters reach their target
        state = queue_state(self.connection, queue)
        if state is not None and state[0]:
            raise MigrationRefused(
                f"{queue} still holds {state[0]} messages (published to it directly?): run the "
                "migration again"
            )
        self.channel().queue_delete(queue)

    def move(self, source: str, destination: str) -> int:
        """Every message of `source` into `destination`: each published with a confirm, then
        acknowledged."""
        channel = self.channel()
        channel.confirm_delivery()
        count = 0
        while True:
            method, properties, body = channel.basic_get(source, auto_ack=False)
            if method is None:
                break
            channel.basic_publish("", destination, body, properties, mandatory=True)
            self.checkpoint(f"{source} → {destination}: a copy confirmed, not yet acknowledged")
            channel.basic_ack(method.delivery_tag)
            count += 1
        with contextlib.suppress(Exception):
            channel.close()
        return count
