import pika
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from pika.exceptions import AMQPError

from django_tools.env import redact_url
from django_tools.replica.topology import Topology


class Command(BaseCommand):
    help = (
        "Declare the CQRS exchange and this replica's queue, retry queues, dead-letter queue and "
        "bindings, so that events published before the consumer first starts are kept."
    )

    def handle(self, *args, **options) -> None:
        url = settings.CQRS["url"]
        params = pika.URLParameters(url)
        params.connection_attempts = 1
        params.socket_timeout = params.stack_timeout = 5
        try:
            connection = pika.BlockingConnection(params)
        except (AMQPError, OSError) as exc:
            raise CommandError(f"RabbitMQ is not reachable at {redact_url(url)}: {exc!r}") from exc
        try:
            for line in Topology.from_settings().declare(connection.channel()):
                self.stdout.write(f"declared {line}")
        finally:
            connection.close()
