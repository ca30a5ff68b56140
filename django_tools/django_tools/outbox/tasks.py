"""Periodic work of a master (Celery beat): reconciliation with its replica, outbox pruning."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from dj_cqrs.registries import MasterRegistry

from django_tools.conf import setting
from django_tools.outbox.reconcile import HttpReplicaReader, reconcile
from django_tools.outbox.services import prune_published


@shared_task(name="outbox.reconcile_replica")
def reconcile_replica(dry_run: bool = False) -> list[dict]:
    """Reconcile every master model with the replica at RECONCILE_REPLICA_URL."""
    reader = HttpReplicaReader(setting("RECONCILE_REPLICA_URL"))
    return [
        reconcile(model, reader, chunk=setting("RECONCILE_CHUNK"), dry_run=dry_run).as_dict()
        for model in MasterRegistry.models.values()
    ]


@shared_task(name="outbox.prune")
def prune_outbox() -> int:
    return prune_published(older_than=timedelta(seconds=setting("OUTBOX_RETENTION")))
