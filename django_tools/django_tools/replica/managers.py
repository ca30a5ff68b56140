"""The `cqrs` manager of replica models applied by django_tools.replica."""

from __future__ import annotations

from dj_cqrs.constants import SignalType
from dj_cqrs.managers import ReplicaManager
from django.db import router, transaction

from django_tools.replica.apply import apply_changes, prepare
from django_tools.replica.messages import Event


class ConvergentReplicaManager(ReplicaManager):
    """`cqrs` manager of replica models written only through `apply`: django-cqrs's own
    entry points (`cqrs_save`, `cqrs_delete`, the stock consumer, `cqrs_bulk_load`) then obey the
    same revision and tombstone rules as the reliable consumer."""

    def save_instance(self, master_data, previous_data=None, sync=False, meta=None):
        signal = SignalType.SYNC if sync else SignalType.SAVE
        return self._apply_one(signal, master_data)

    def delete_instance(self, master_data) -> bool:
        self._apply_one(SignalType.DELETE, master_data)
        return True

    def _apply_one(self, signal_type: str, master_data: dict):
        event = Event(
            cqrs_id=self.model.CQRS_ID,
            signal_type=signal_type,
            instance_pk=master_data.get(self.model._meta.pk.name, master_data.get("id")),
            revision=master_data.get("cqrs_revision"),
            data=master_data,
        )
        change = prepare(event)
        with transaction.atomic(using=router.db_for_write(self.model)):
            apply_changes([change])
        return self.model._default_manager.filter(pk=change.pk).first() or change
