import logging
import signal

from django.conf import settings
from django.core.management.base import BaseCommand

from django_tools.outbox.relay import Relay


class Command(BaseCommand):
    help = (
        "Publish the outbox to RabbitMQ (publisher confirms, at least once, in id order) until "
        "stopped. A second relay waits as a standby while one is publishing."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--batch-size", type=int, help="rows per batch (OUTBOX_BATCH_SIZE)")

    def handle(self, *args, batch_size=None, **options) -> None:
        conf = settings.OUTBOX
        relay = Relay(
            settings.CQRS["url"],
            settings.CQRS.get("exchange", "cqrs"),
            batch_size=batch_size or conf["batch_size"],
            poll_max=conf["poll_max"],
        )
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: relay.request_stop())
        logging.getLogger("django_tools.outbox").info(
            "relay starting: exchange %s, batches of %s", relay.exchange, relay.batch_size
        )
        relay.run()
        self.stdout.write(
            f"relay stopped: {relay.stats.published} published in {relay.stats.batches} batches"
        )
