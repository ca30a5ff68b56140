"""django-cqrs's master signal handlers, writing to the outbox inside the transaction.

Stock django-cqrs builds the event in `transaction.on_commit` and publishes it right there: a
broker that is down or slow at that moment, or a process that dies between the commit and the
publish, loses the event. Here the same payload is built right after the change, and written to
the outbox table by the same transaction.
"""

from __future__ import annotations

from dj_cqrs.constants import SignalType
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.registries import MasterRegistry
from dj_cqrs.signals import MasterSignals, post_bulk_create, post_update
from dj_cqrs.utils import get_message_expiration_dt
from django.db import models
from django.utils.timezone import now

from django_tools.outbox.writer import enqueue


def _disconnect(handlers: type[MasterSignals], model: type[models.Model]) -> None:
    """Undo `handlers.register_model(model)` (django-cqrs has no unregister)."""
    models.signals.post_save.disconnect(handlers.post_save, sender=model)
    models.signals.post_delete.disconnect(handlers.post_delete, sender=model)
    post_bulk_create.disconnect(handlers.post_bulk_create, sender=model)
    post_update.disconnect(handlers.post_bulk_update, sender=model)


class OutboxSignals(MasterSignals):
    @classmethod
    def install(cls) -> None:
        """Replace django-cqrs's handlers with ours on every registered master model."""
        for model in MasterRegistry.models.values():
            _disconnect(MasterSignals, model)
            cls.register_model(model)

    @classmethod
    def uninstall(cls) -> None:
        """Back to django-cqrs's own handlers (publish on commit): only `apis bench` does this,
        to measure stock django-cqrs."""
        for model in MasterRegistry.models.values():
            _disconnect(cls, model)
            MasterSignals.register_model(model)

    @classmethod
    def post_save(cls, sender, **kwargs) -> None:
        payload = cls.save_payload(sender, kwargs["instance"], kwargs)
        if payload is not None:
            enqueue([payload], kwargs["using"])
            # django-cqrs bumps the revision only on the first save of an instance in a
            # transaction and publishes once at commit. Each save here is its own event, so
            # each save must be a new revision: start the count again.
            kwargs["instance"].reset_cqrs_saves_count()

    @classmethod
    def _post_bulk(cls, sender, **kwargs) -> None:
        """After `cqrs.bulk_create` / `cqrs.bulk_update`: one INSERT for all their events."""
        payloads = []
        for instance in kwargs["instances"]:
            payload = cls.save_payload(sender, instance, {"using": kwargs["using"]})
            if payload is not None:
                payloads.append(payload)
        if payloads:
            enqueue(payloads, kwargs["using"])

    @classmethod
    def save_payload(cls, sender, instance, kwargs) -> TransportPayload | None:
        """The event of a save of `instance` (a SYNC with `sync=True`, for one replica's
        `queue`), as django-cqrs would build it; None when it produces no event."""
        if not sender.CQRS_PRODUCE:
            return None
        update_fields = kwargs.get("update_fields")
        if update_fields and "cqrs_revision" not in update_fields:
            return None
        if not instance.is_sync_instance():
            return None
        using = kwargs["using"]
        sync = kwargs.get("sync", False)
        instance_data = instance.to_cqrs_dict(using, sync=sync)
        previous_data = instance.get_tracked_fields_data()
        signal_type = SignalType.SYNC if sync else SignalType.SAVE
        return TransportPayload(
            signal_type,
            sender.CQRS_ID,
            instance_data,
            instance.pk,
            kwargs.get("queue"),
            previous_data,
            expires=get_message_expiration_dt(),
            meta=instance.get_cqrs_meta(
                instance_data=instance_data, previous_data=previous_data, signal_type=signal_type
            ),
        )

    @classmethod
    def post_delete(cls, sender, **kwargs) -> None:
        payload = cls.delete_payload(sender, kwargs["instance"])
        if payload is not None:
            enqueue([payload], kwargs.get("using"))

    @classmethod
    def delete_payload(cls, sender, instance) -> TransportPayload | None:
        """django-cqrs's delete event for `instance` (its next revision), or None when the
        model does not produce or the instance is not synced."""
        if not sender.CQRS_PRODUCE or not instance.is_sync_instance():
            return None
        instance_data = {
            "id": instance.pk,
            "cqrs_revision": instance.cqrs_revision + 1,
            "cqrs_updated": str(now()),
        }
        custom = instance.get_custom_cqrs_delete_data()
        if custom:
            instance_data["custom"] = custom
        return TransportPayload(
            SignalType.DELETE,
            sender.CQRS_ID,
            instance_data,
            instance.pk,
            expires=get_message_expiration_dt(),
            meta=instance.get_cqrs_meta(instance_data=instance_data, signal_type=SignalType.DELETE),
        )
