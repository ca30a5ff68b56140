from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from django_tools.conf import setting
from django_tools.outbox.services import prune_published


class Command(BaseCommand):
    help = "Delete outbox rows published longer ago than the retention (OUTBOX_RETENTION)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--older-than", type=int, help="seconds (default: OUTBOX_RETENTION)")

    def handle(self, *args, older_than=None, **options) -> None:
        seconds = setting("OUTBOX_RETENTION") if older_than is None else older_than
        if seconds < 0:
            raise CommandError("--older-than must be >= 0")
        deleted = prune_published(older_than=timedelta(seconds=seconds))
        self.stdout.write(f"pruned {deleted} published outbox rows older than {seconds}s")
