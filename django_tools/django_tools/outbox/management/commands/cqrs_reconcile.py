import json

from dj_cqrs.registries import MasterRegistry
from django.core.management.base import BaseCommand, CommandError

from django_tools.conf import setting
from django_tools.outbox.reconcile import HttpReplicaReader, ReplicaUnavailable, reconcile


class Command(BaseCommand):
    help = (
        "Compare this master's rows with a replica's (key, revision, content checksum) a chunk "
        "at a time, and send the repairs (syncs, deletes to the replica's queue) via the outbox."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--cqrs-id", help="one CQRS_ID (default: every master model)")
        parser.add_argument(
            "--replica-url", help="the replica's API (default: RECONCILE_REPLICA_URL)"
        )
        parser.add_argument("--chunk", type=int, help="rows per page (default: RECONCILE_CHUNK)")
        parser.add_argument("--dry-run", action="store_true", help="report, send nothing")
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="one JSON report per line"
        )

    def handle(self, *args, **options) -> None:
        models = MasterRegistry.models
        cqrs_id = options["cqrs_id"]
        if cqrs_id is not None and cqrs_id not in models:
            have = ", ".join(models)
            raise CommandError(f"no master model has CQRS_ID {cqrs_id!r} (have: {have})")
        chunk = options["chunk"] or setting("RECONCILE_CHUNK")
        if chunk < 1:
            raise CommandError("--chunk must be at least 1")
        url = options["replica_url"] or setting("RECONCILE_REPLICA_URL")
        try:
            reader = HttpReplicaReader(url)
        except ReplicaUnavailable as exc:
            raise CommandError(
                f"{exc}: is the replica running? (RECONCILE_REPLICA_URL or --replica-url)"
            ) from exc
        for model in [models[cqrs_id]] if cqrs_id else list(models.values()):
            report = reconcile(
                model, reader, chunk=chunk, dry_run=options["dry_run"], progress=self._progress
            )
            self.stderr.write("")
            self.stdout.write(
                json.dumps(report.as_dict()) if options["as_json"] else report.summary()
            )

    def _progress(self, report) -> None:
        self.stderr.write(
            f"\r{report.master_rows} master / {report.replica_rows} replica rows compared, "
            f"{report.repairs_sent} repairs",
            ending="",
        )
