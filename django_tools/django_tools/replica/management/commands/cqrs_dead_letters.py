"""`cqrs_dead_letters dump|retry|purge`: django-cqrs's command, reading the reasons too.

dump   one JSON object per dead letter on stdout (reason, retries, failure times, original
       routing key, payload); changes nothing
retry  puts the dead letters back on the replica's queue with their retries reset
purge  removes them
"""

import orjson
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from pika.exceptions import AMQPError

from django_tools.broker import blocking_connection
from django_tools.env import redact_url
from django_tools.replica import dead_letters
from django_tools.replica.topology import Topology


class Command(BaseCommand):
    help = "Inspect (dump), replay (retry) or remove (purge) the replica's dead letters."

    def add_arguments(self, parser) -> None:
        commands = parser.add_subparsers(dest="command", required=True)
        for name, text in (
            ("dump", "print every dead letter as one JSON object per line (changes nothing)"),
            ("retry", "send dead letters back to the replica's queue, retries reset"),
            ("purge", "remove dead letters"),
        ):
            sub = commands.add_parser(name, help=text)
            sub.add_argument("--cqrs-id", help="only dead letters of this CQRS_ID")
            sub.add_argument("--limit", type=int, help="at most this many dead letters")

    def handle(self, *args, command: str, cqrs_id=None, limit=None, **options) -> None:
        if limit is not None and limit < 1:
            raise CommandError("--limit must be at least 1")
        topology = Topology.from_settings()
        url = settings.CQRS["url"]
        try:
            connection = blocking_connection(url)
        except (AMQPError, OSError) as exc:
            raise CommandError(f"RabbitMQ is not reachable at {redact_url(url)}: {exc!r}") from exc
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            topology.declare(channel)
            total = dead_letters.count(channel, topology)
            if command == "purge" and cqrs_id is None and limit is None:
                channel.queue_purge(topology.dead_letter_queue)
                self.stdout.write(f"purged {total} dead letters from {topology.dead_letter_queue}")
                return
            done = 0
            for letter in dead_letters.read(channel, topology, cqrs_id=cqrs_id, limit=limit):
                if command == "dump":
                    self.stdout.write(orjson.dumps(letter.report.as_dict()).decode())
                elif command == "retry" and settings.REPLICATION_MODE == "celery":
                    dead_letters.retry_as_task(channel, letter)
                elif command == "retry":
                    dead_letters.retry(channel, letter, topology)
                else:
                    dead_letters.purge(channel, letter)
                done += 1
                if command != "dump" and done % 1000 == 0:
                    self.stderr.write(f"{command}: {done}…")
            # The letters read and left go back to the queue when the channel closes (for a
            # quorum queue, a moment later): wait for them, so that the next command sees them.
            channel.close()
            kept = total - (done if command != "dump" else 0)
            dead_letters.wait_for_depth(connection, topology, kept)
            if command == "dump":
                self.stderr.write(f"{done} of {total} dead letters in {topology.dead_letter_queue}")
            elif command == "retry":
                target = (
                    settings.CELERY_TASK_DEFAULT_QUEUE
                    if settings.REPLICATION_MODE == "celery"
                    else topology.queue
                )
                self.stdout.write(
                    f"sent {done} of {total} dead letters back to {target}, retries reset"
                )
            else:
                self.stdout.write(f"purged {done} of {total} dead letters")
        finally:
            if connection.is_open:
                connection.close()
