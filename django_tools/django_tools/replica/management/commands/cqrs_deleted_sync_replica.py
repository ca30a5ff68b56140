"""`cqrs_deleted_sync_replica`: django-cqrs's command (same input on stdin: a line
`<cqrs_id>,…`, then JSON lists of primary keys to delete), deleting through
`django_tools.replica.services.delete_rows` — each row leaves a tombstone and the replica's
version is bumped, so a cache keyed on it never serves a deleted row and no late save brings it
back (the stock command deletes with a plain queryset)."""

import sys

from dj_cqrs.management.commands.cqrs_deleted_sync_replica import Command as StockCommand
from django.db import DatabaseError

from django_tools.replica.services import delete_rows


class Command(StockCommand):
    help = (
        "Delete the replica rows whose keys come on stdin (from cqrs_deleted_diff_*), leaving "
        "tombstones and bumping the replica's version."
    )

    def handle(self, *args, **options):
        deleted = 0
        with sys.stdin as lines:
            model = self._get_model(lines.readline().strip())
            for line in lines:
                if not line.strip():
                    continue
                try:
                    deleted += delete_rows(model, self.deserialize_in(line.strip()))
                except DatabaseError as exc:
                    print(str(exc), file=sys.stderr)
        self.stderr.write(f"{deleted} {model.CQRS_ID} rows deleted (tombstones kept)")
