from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from pika.exceptions import AMQPError, ChannelClosedByBroker

from django_tools.broker import blocking_connection
from django_tools.broker_permissions import explain
from django_tools.env import redact_url, scrub
from django_tools.replica.topology import MigrationInProgress, QueueTypeMismatch, Topology


class Command(BaseCommand):
    help = (
        "Declare the CQRS exchange and this replica's queue, retry queues, dead-letter queue and "
        "bindings, so that events published before the consumer first starts are kept."
    )

    def handle(self, *args, **options) -> None:
        url = settings.CQRS["url"]
        try:
            connection = blocking_connection(url, socket_timeout=5, stack_timeout=5)
        except (AMQPError, OSError, ValueError) as exc:  # ValueError: a URL pika cannot parse
            raise CommandError(
                scrub(f"RabbitMQ is not reachable at {redact_url(url)}: {exc!r}", [url])
            ) from exc
        try:
            for line in Topology.from_settings().declare(connection.channel()):
                self.stdout.write(f"declared {line}")
        except (QueueTypeMismatch, MigrationInProgress) as exc:
            raise CommandError(str(exc)) from exc
        except ChannelClosedByBroker as exc:
            raise CommandError(explain(exc) or repr(exc)) from exc
        finally:
            connection.close()
