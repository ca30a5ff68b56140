"""System checks of an outbox master: misconfigurations found when the process starts (`check`,
`migrate`, `outbox_relay`, `apis up`), each with the fix."""

from __future__ import annotations

from django.conf import settings
from django.core import checks

from django_tools.conf import OUTBOX_TRANSPORT, setting


@checks.register("cqrs")
def check_master(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    from dj_cqrs.registries import MasterRegistry

    from django_tools.outbox.models import OutboxMasterManager, TransactionalWritesMixin

    problems: list[checks.CheckMessage] = []
    for cqrs_id, model in MasterRegistry.models.items():
        if not issubclass(model, TransactionalWritesMixin):
            problems.append(checks.Error(
                f"master model of CQRS_ID {cqrs_id!r} saves outside a transaction when its "
                "caller opened none: the change and its outbox row could commit apart",
                hint="put django_tools.outbox.models.TransactionalWritesMixin first in its bases",
                obj=model, id="django_tools.outbox.E001",
            ))  # fmt: skip
        if not isinstance(getattr(model, "cqrs", None), OutboxMasterManager):
            problems.append(checks.Error(
                f"master model of CQRS_ID {cqrs_id!r}: its bulk operations would write their "
                "outbox rows after their own transaction",
                hint="add `cqrs = OutboxMasterManager()` (from django_tools.outbox.models)",
                obj=model, id="django_tools.outbox.E002",
            ))  # fmt: skip
    cqrs = getattr(settings, "CQRS", {})
    if cqrs.get("transport") != OUTBOX_TRANSPORT:
        problems.append(checks.Warning(
            f"CQRS['transport'] is {cqrs.get('transport')!r}: django-cqrs's own producers "
            "(cqrs_sync, Model.cqrs_sync) would publish around the outbox",
            hint=f"use {OUTBOX_TRANSPORT} (unset CQRS_TRANSPORT)",
            id="django_tools.outbox.W001",
        ))  # fmt: skip
    if setting("REPLICATION_MODE") == "celery" and not setting("REPLICA_TASK_QUEUE"):
        problems.append(checks.Error(
            "REPLICATION_MODE=celery but no REPLICA_TASK_QUEUE: the relay has nowhere to send",
            hint="set REPLICA_TASK_QUEUE to the replica's Celery queue",
            id="django_tools.outbox.E003",
        ))  # fmt: skip
    return problems
