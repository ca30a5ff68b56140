import logging
import signal

from django.core.management.base import BaseCommand

from django_tools.conf import setting
from django_tools.outbox.relays import relay_for_settings


class Command(BaseCommand):
    help = (
        "Publish the outbox until stopped: django-cqrs messages with pipelined publisher confirms "
        "(REPLICATION_MODE=cqrs), or one Celery task per change (REPLICATION_MODE=celery). At "
        "least once, in id order; a second relay waits as a standby while one is publishing."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--batch-size", type=int, help="rows per batch (OUTBOX_BATCH_SIZE)")

    def handle(self, *args, batch_size=None, **options) -> None:
        relay = relay_for_settings(batch_size)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: relay.request_stop())
        logging.getLogger("django_tools.outbox").info(
            "relay starting (%s mode): %s, batches of %s",
            setting("REPLICATION_MODE"),
            relay.describe(),
            relay.batch_size,
        )
        try:
            relay.run()
        finally:
            relay.heartbeat.remove()  # a relay that left on purpose is not a stuck one
        self.stdout.write(
            f"relay stopped: {relay.stats.published} published in {relay.stats.batches} batches"
        )
