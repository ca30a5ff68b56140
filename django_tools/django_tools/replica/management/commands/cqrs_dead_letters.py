"""`cqrs_dead_letters dump|retry|purge`: django-cqrs's command, reading the reasons too.

dump   each dead letter's body on a line of stdout, as django-cqrs's own command prints it, so
       scripts written for the stock command keep working; `--detail` prints one JSON object per
       letter instead (its identity, reason, error, retries, failure times, original routing key,
       payload). Changes nothing.
retry  puts the dead letters back on the replica's queue with their retries reset
purge  removes them

Reading moves each letter to the tail of the queue (copy confirmed, then acknowledged): it never
counts a delivery, so no delivery limit (RabbitMQ 4's default: 20) ever drops a letter for
having been looked at (django_tools.replica.dead_letters).

Each takes the filters of the admin's dead-letter page (`--cqrs-id`, `--reason`, `--id`): both
read and act through django_tools.replica.dead_letters, and `--id` takes the identity
`dump --detail` and the page show.
"""

import orjson
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from django_tools.conf import setting
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
        queue = topology.dead_letter_queue
        reading = dead_letters.Reading(connection, topology)
        done = 0
        try:
            with reading:
                everything = cqrs_id is None and reason is None and ids is None and limit is None
                if command == "purge" and everything:
                    # Under the reader lock too: no reader holds a copy it would put back.
                    purged = reading.purge_all()
                    self.stdout.write(f"purged {purged} dead letters from {queue}")
                    return
                chosen = reading.letters(cqrs_id=cqrs_id, reason=reason, ids=ids, limit=limit)
                for letter in chosen:
                    if command == "dump" and detail:
                        line = {"id": letter.id, **letter.report.as_dict()}
                        self.stdout.write(orjson.dumps(line).decode())
                    elif command == "dump":
                        # The stock shape: the body as it is (a body that is not UTF-8 stays
                        # readable).
                        self.stdout.write(letter.body.decode("utf-8", errors="backslashreplace"))
                    else:
                        reading.act(command, letter)
                    done += 1
                    if command != "dump" and done % 1000 == 0:
                        self.stderr.write(f"{command}: {done}…")
        except dead_letters.ReaderBusy as exc:
            raise CommandError(str(exc)) from exc
        except (dead_letters.NotActed, *dead_letters.BROKER_ERRORS) as exc:
            what = {"retry": "sent back", "purge": "purged", "dump": "printed"}[command]
            raise CommandError(
                scrub(
                    f"stopped after {done} dead letters {what}: {exc!r} (the others are still "
                    f"in {queue}; run the command again)",
                    [url],
                )
            ) from exc
        finally:
            if connection.is_open:
                connection.close()
        if not reading.exists:
            self.stderr.write(f"{queue} does not exist (yet): no dead letters")
        if command == "dump":
            self.stderr.write(f"{done} of {reading.total} dead letters in {queue}")
        elif command == "retry":
            target = (
                setting("CELERY_TASK_DEFAULT_QUEUE")
                if setting("REPLICATION_MODE") == "celery"
                else topology.queue
            )
            self.stdout.write(
                f"sent {done} of {reading.total} dead letters back to {target}, retries reset"
            )
        else:
            self.stdout.write(f"purged {done} of {reading.total} dead letters")
