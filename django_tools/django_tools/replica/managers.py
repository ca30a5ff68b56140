"""The `cqrs` manager of replica models applied by django_tools.replica. It depends on the
replica's core (`apply`, `hooks`, `write`); the core never imports it: while apply calls a
model's own hooks, it sets `hooks.inside_apply(model)`, which this manager reads."""

from __future__ import annotations

from dj_cqrs.constants import SignalType
from dj_cqrs.managers import ReplicaManager

from django_tools.replica import hooks
from django_tools.replica.apply import apply_changes, prepare
from django_tools.replica.messages import Event, InvalidData
from django_tools.replica.write import database_of, transaction_for


class ConvergentReplicaManager(ReplicaManager):
    """`cqrs` manager of replica models written only through `apply`: django-cqrs's own entry
    points (`cqrs_save`, `cqrs_delete`, the stock consumer, `cqrs_bulk_load`) then obey the same
    revision and tombstone rules as the reliable consumer.

    Inside an apply (a model written through its hooks), `save_instance` and `delete_instance`
    do the write itself, as django-cqrs's manager does — but an error is raised, not logged and
    swallowed, so the message is retried or dead-lettered instead of silently lost."""

    # What `apply.replica_model` checks: this manager obeys `hooks.applying`.
    routes_to_replica_apply = True

    def save_instance(self, master_data, previous_data=None, sync=False, meta=None):
        if hooks.applying(self.model):
            return self._save_through_hooks(master_data, previous_data, sync, meta)
        signal = SignalType.SYNC if sync else SignalType.SAVE
        return self._apply_one(signal, master_data, previous_data, meta)

    def delete_instance(self, master_data) -> bool:
        if hooks.applying(self.model):
            mapped = self._map_delete_data(master_data)
            if not mapped:
                raise InvalidData(f"a delete without id or cqrs fields for {self.model.__name__}")
            pk_name = self._get_model_pk_name()
            rows = self.model._default_manager.db_manager(database_of(self.model))
            rows.filter(**{pk_name: mapped[pk_name]}).delete()
            return True
        self._apply_one(SignalType.DELETE, master_data)
        return True

    def _save_through_hooks(self, master_data, previous_data, sync, meta):
        mapped = self._map_save_data(master_data)
        if not mapped:
            raise InvalidData(f"data that does not fit {self.model.__name__}'s CQRS mapping")
        mapped_previous = self._map_previous_data(previous_data) if previous_data else None
        pk_name = self._get_model_pk_name()
        # Read where apply writes (and locked): never a read replica's older copy.
        manager = self.model._default_manager.db_manager(database_of(self.model))
        rows = manager.filter(**{pk_name: mapped[pk_name]}).order_by()
        if self.model.CQRS_SELECT_FOR_UPDATE:
            rows = rows.select_for_update()
        instance = rows.first()
        options = {"previous_data": mapped_previous}
        if self.model.CQRS_META:
            options["meta"] = meta
        if instance is not None:
            return instance.cqrs_update(sync, mapped, **options)
        return self.model.cqrs_create(sync, mapped, **options)

    def _apply_one(self, signal_type: str, master_data: dict, previous_data=None, meta=None):
        event = Event(
            cqrs_id=self.model.CQRS_ID,
            signal_type=signal_type,
            instance_pk=master_data.get(self.model._meta.pk.name, master_data.get("id")),
            revision=master_data.get("cqrs_revision"),
            data=master_data,
            previous_data=previous_data,
            meta=meta,
        )
        change = prepare(event)
        with transaction_for([change]):
            apply_changes([change])
        manager = self.model._default_manager.db_manager(database_of(self.model))
        return manager.filter(pk=change.pk).first() or change
