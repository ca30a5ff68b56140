"""`cqrs_queues`: the replica's queues on the broker, and moving them to another type.

show                      each queue: type, messages waiting, consumers (the default)
migrate --to quorum       classic → quorum (or --to classic) without losing what they hold; a
                          line after each step; killed at any point, run it again to finish
"""

from django.core.management.base import BaseCommand, CommandError
from pika.exceptions import AMQPError

from django_tools.broker import blocking_connection
from django_tools.replica.queue_migration import MigrationRefused, migrate, queue_state
from django_tools.replica.topology import (
    QUEUE_TYPES,
    QueueTypeMismatch,
    Topology,
    UnknownQueueType,
)


class Command(BaseCommand):
    help = "Show the replica's queues (type, depth, consumers) or move them to another type."

    def add_arguments(self, parser) -> None:
        commands = parser.add_subparsers(dest="command")
        commands.add_parser("show", help="each queue: type, messages, consumers (default)")
        move = commands.add_parser(
            "migrate", help="move every queue to another type without losing messages"
        )
        move.add_argument("--to", choices=QUEUE_TYPES, required=True, dest="to_type")

    def handle(self, *args, command=None, to_type=None, **options) -> None:
        topology = Topology.from_settings()
        try:
            connection = blocking_connection()
        except (AMQPError, OSError) as exc:
            raise CommandError(f"RabbitMQ is not reachable: {exc!r}") from exc
        try:
            if command == "migrate":
                moved = migrate(connection, topology, to_type, say=self.progress)
                self.stdout.write(
                    f"every queue of {topology.queue} is {to_type} now ({moved} messages moved); "
                    f"set CQRS_QUEUE_TYPE={to_type} and start the consumers"
                )
                return
            self.show(connection, topology)
        except (MigrationRefused, QueueTypeMismatch, UnknownQueueType) as exc:
            raise CommandError(str(exc)) from exc
        finally:
            if connection.is_open:
                connection.close()

    def progress(self, line: str) -> None:
        # Flushed at once: whoever watches (an operator, the lab's migrate-killed fault) sees
        # each step as it ends, even through a pipe.
        self.stdout.write(line)
        self.stdout.flush()

    def show(self, connection, topology: Topology) -> None:
        underway = topology.migration_in_progress(connection)
        if underway is not None:
            self.stdout.write(
                f"a migration to {underway} is not finished (marker "
                f"{topology.migration_marker(underway)}): run `cqrs_queues migrate --to "
                f"{underway}` again; consumers wait until then"
            )
        channel = connection.channel()
        for queue in topology.queues():
            state = queue_state(connection, queue)
            if state is None:
                self.stdout.write(f"{queue}: not declared")
            else:
                kind = topology.existing_type(channel, queue)
                self.stdout.write(f"{queue}: {kind}, {state[0]} messages, {state[1]} consumers")
            held = queue_state(connection, Topology.migrating(queue))
            if held is not None:
                self.stdout.write(f"{Topology.migrating(queue)}: {held[0]} messages held")
