"""`cqrs_dead_letters dump|retry|purge`: django-cqrs's command, reading the reasons too.

dump   each dead letter's body on a line of stdout, as django-cqrs's own command prints it, so
       scripts written for the stock command keep working; `--detail` prints one JSON object per
       letter instead (its identity, reason, error, retries, failure times, original routing key,
       payload). Changes nothing.
retry  puts the dead letters back on the replica's queue with their retries reset
purge  removes them

Each takes the filters of the admin's dead-letter page (`--cqrs-id`, `--reason`, `--id`): both
read and act through django_tools.replica.dead_letters, and `--id` takes the identity `dump` and
the page show.
"""

import orjson
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from django_tools.env import redact_url, scrub
from django_tools.replica import dead_letters
from django_tools.replica.failures import DEAD_REASONS
from django_tools.replica.topology import Topology


class Command(BaseCommand):
    help = "Inspect (dump), replay (retry) or remove (purge) the replica's dead letters."

    def add_arguments(self, parser) -> None:
        commands = parser.add_subparsers(dest="command", required=True)
        for name, text in (
            ("dump", "print every dead letter's body, one per line (changes nothing)"),
            ("retry", "send dead letters back to the replica's queue, retries reset"),
            ("purge", "remove dead letters"),
        ):
            sub = commands.add_parser(name, help=text)
            sub.add_argument("--cqrs-id", help="only dead letters of this CQRS_ID")
            sub.add_argument("--reason", choices=DEAD_REASONS, help="only those dead for this")
            sub.add_argument(
                "--id", action="append", dest="ids", metavar="ID",
                help="only the letter of this identity (`id` in `dump --detail`); repeatable",
            )  # fmt: skip
            sub.add_argument("--limit", type=int, help="at most this many dead letters")
            if name == "dump":
                sub.add_argument(
                    "--detail", action="store_true",
                    help="one JSON object per letter: identity, reason, error, retries, payload",
                )  # fmt: skip

    def handle(
        self,
        *args,
        command: str,
        cqrs_id=None,
        reason=None,
        ids=None,
        limit=None,
        detail=False,
        **options,
    ) -> None:
        if limit is not None and limit < 1:
            raise CommandError("--limit must be at least 1")
        topology = Topology.from_settings()
        url = settings.CQRS["url"]
        try:
            connection = dead_letters.connect(url)
        except dead_letters.BROKER_ERRORS as exc:
            raise CommandError(
                scrub(f"RabbitMQ is not reachable at {redact_url(url)}: {exc!r}", [url])
            ) from exc
        try:
            channel = dead_letters.open_channel(connection, topology)
            total = dead_letters.count(channel, topology)
            everything = cqrs_id is None and reason is None and ids is None and limit is None
            if command == "purge" and everything:
                channel.queue_purge(topology.dead_letter_queue)
                self.stdout.write(f"purged {total} dead letters from {topology.dead_letter_queue}")
                return
            done = 0
            chosen = dead_letters.read(
                channel, topology, cqrs_id=cqrs_id, reason=reason, ids=ids, limit=limit
            )
            for letter in chosen:
                if command == "dump" and detail:
                    line = {"id": letter.id, **letter.report.as_dict()}
                    self.stdout.write(orjson.dumps(line).decode())
                elif command == "dump":
                    # The stock shape: the body as it is (a body that is not UTF-8 stays readable).
                    self.stdout.write(letter.body.decode("utf-8", errors="backslashreplace"))
                else:
                    dead_letters.act(command, channel, letter, topology)
                done += 1
                if command != "dump" and done % 1000 == 0:
                    self.stderr.write(f"{command}: {done}…")
            # The letters read and left go back to the queue when the channel closes (for a
            # quorum queue, a moment later): wait for them, so that the next command sees them.
            kept = total - (done if command != "dump" else 0)
            dead_letters.give_back(connection, channel, topology, kept)
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
