import pika
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from pika.exceptions import AMQPError

from django_tools.broker import declare_topology
from django_tools.env import redact_url


class Command(BaseCommand):
    help = (
        "Declare the CQRS exchange and, on a replica, its queue, dead-letter queue and bindings, "
        "so that events published before the consumer first starts are kept."
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
            for line in declare_topology(connection.channel()):
                self.stdout.write(f"declared {line}")
        finally:
            connection.close()
