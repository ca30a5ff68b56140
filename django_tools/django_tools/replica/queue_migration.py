"""Moving a replica's queues to another type (classic ↔ quorum) without losing what they hold.

RabbitMQ cannot change a queue's type in place: the queue must be deleted and declared again,
and a deleted queue loses its messages and, while it does not exist, every event published for
it. So, queue by queue (the replica's queue first, so that the retry tiers always have it to
dead-letter into):

1. declare `<queue>.migrating` with the new type and bind it like the queue: new events land there;
2. unbind the queue, move its messages to `<queue>.migrating` (each published with confirms
   before it is acknowledged), delete it (only if empty);
3. declare the queue with the new type, bind it, unbind `<queue>.migrating`, move the messages
   back, delete `<queue>.migrating`.

An event published between 1 and 2 lands in both queues: the replica applies it twice, which is
harmless (revisions make applying idempotent). The consumers must be stopped (a consumer of the
old queue would be cancelled and could declare it again with the old type); the migration
refuses to start while the replica's queue has consumers. Interrupted, it can be run again: it
goes on from where it stopped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from django_tools.replica.topology import Topology

MIGRATING_SUFFIX = ".migrating"


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
) -> int:
    """Move every queue of the replica to `to_type`; returns how many messages were moved."""
    main = queue_state(connection, topology.queue)
    if main is not None and main[1]:
        raise MigrationRefused(
            f"queue {topology.queue} has {main[1]} consumers: stop the replica's consumers "
            "(cqrs_consume) first, then run the migration again"
        )
    topology.ensure_exchange(connection)  # passive first: the feed's user may only read it
    target = Topology.named(
        topology.queue,
        topology.policy,
        exchange=topology.exchange,
        dead_letter_queue=topology.dead_letter_queue,
        cqrs_ids=topology.cqrs_ids,
        queue_type=to_type,
    )
    from django_tools.replica.dead_letters import reader_lock

    moved = 0
    # No reader of the dead letters meanwhile: one holds a letter while it moves it, which the
    # move below would not see before deleting the queue.
    with reader_lock(connection, topology):
        for queue in target.queues():  # the replica's queue first
            moved += _migrate_queue(connection, target, queue, to_type, say)
    return moved


def _confirming(connection: BlockingConnection) -> BlockingChannel:
    # A channel of its own for each step: RabbitMQ 3.10 keeps a channel's idea of a queue's
    # type, and a channel that used the old queue crashes publishing to the new one.
    channel = connection.channel()
    channel.confirm_delivery()
    return channel


def _migrate_queue(connection, target: Topology, queue: str, to_type: str, say) -> int:
    channel = _confirming(connection)
    temporary = queue + MIGRATING_SUFFIX
    keys = [key for bound, key in target.bindings() if bound == queue]
    arguments = target.arguments(queue, to_type)
    moved = 0
    current = target.existing_type(channel, queue)
    # Another type, or this type with an earlier version's arguments (RabbitMQ changes neither
    # in place): declared again the same way.
    if current is not None and (
        current != to_type or not target.declared_as_today(connection, queue, to_type)
    ):
        channel.queue_declare(temporary, durable=True, arguments=arguments)
        for key in keys:
            channel.queue_bind(temporary, target.exchange, routing_key=key)
            channel.queue_unbind(queue, target.exchange, routing_key=key)
        count = _move(channel, queue, temporary)
        say(f"{queue}: {count} messages held in {temporary} while it is declared again")
        moved += count
        _delete_empty(connection, channel, queue)
        current = None
    if current is None:
        channel = _confirming(connection)
        channel.queue_declare(queue, durable=True, arguments=arguments)
        for key in keys:
            channel.queue_bind(queue, target.exchange, routing_key=key)
    if queue_state(connection, temporary) is not None:
        for key in keys:
            channel.queue_unbind(temporary, target.exchange, routing_key=key)
        count = _move(channel, temporary, queue)
        _delete_empty(connection, channel, temporary)
        say(f"{queue}: now {to_type}, {count} messages moved back")
    else:
        say(f"{queue}: {to_type}")
    return moved


def _delete_empty(connection, channel: BlockingChannel, queue: str) -> None:
    """Delete a queue that was just emptied (unbound first, so nothing comes in any more);
    quorum queues do not take `queue.delete(if_empty)`, so look, then delete."""
    state = queue_state(connection, queue)
    if state is not None and state[0]:
        raise MigrationRefused(
            f"{queue} still holds {state[0]} messages (published to it directly?): run the "
            "migration again"
        )
    channel.queue_delete(queue)


def _move(channel: BlockingChannel, source: str, destination: str) -> int:
    """Every message of `source` into `destination`: published with confirms, then acked."""
    count = 0
    while True:
        method, properties, body = channel.basic_get(source, auto_ack=False)
        if method is None:
            return count
        channel.basic_publish("", destination, body, properties, mandatory=True)
        channel.basic_ack(method.delivery_tag)
        count += 1
