"""`cqrs_bulk_load`: django-cqrs's command, with `--clear` done by the replica's rules. Every
loaded row already goes through the model's `cqrs` manager (`ConvergentReplicaManager`:
revisions, tombstones, version); the stock `--clear` deleted the rows with a plain queryset,
leaving their tombstones behind — which then hid every row the load brought back at the same
revision — and no bump of the version that caches of the replica's reads are keyed on. Here
`--clear` clears rows, tombstones and bumps the version (`django_tools.replica.services.clear`)."""

import os
import sys

from dj_cqrs.management.commands.cqrs_bulk_load import Command as StockCommand
from dj_cqrs.registries import ReplicaRegistry
from django.core.management.base import CommandError
from django.db import DatabaseError

from django_tools.replica.services import clear


class Command(StockCommand):
    def handle(self, *args, **options):
        batch_size = self._get_batch_size(options)
        name = options["input"]
        if name != "-" and not os.path.exists(name):
            raise CommandError(f"File {name} doesn't exist!")
        with sys.stdin if name == "-" else open(name) as stream:
            cqrs_id = (next(stream, "") or "").strip()
            if not cqrs_id:
                raise CommandError(f"File {name} is empty!")
            model = ReplicaRegistry.get_model_by_cqrs_id(cqrs_id)
            if not model:
                raise CommandError(f"Wrong CQRS ID: {cqrs_id}!")
            if options["clear"]:
                try:
                    clear(model)
                except DatabaseError as exc:
                    raise CommandError(f"Delete operation fails! ({exc})") from exc
            self._process(stream, model, batch_size)
