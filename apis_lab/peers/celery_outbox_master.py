"""The master's side of the `celery-outbox` peer (issue 23), as django-celery-outbox documents
it: the service's Celery app is an `OutboxCelery`, and a task sent inside a transaction is a row
of the library's `celery_outbox` table, committed (or rolled back) with the change; its relay
(`manage.py celery_outbox_relay`) sends it to the broker afterwards.

The task is the replica's `replica.apply_event` with the change's django-cqrs payload — the one
the seed's `celery` pipeline sends through this project's outbox — so that the two differ only
in the outbox and its relay. The payload is built by this project's signal handlers
(`OutboxSignals.save_payload`, same revisions, same fields); only where it goes changes.

Imported by `celery_outbox_conf.MasterConfig.ready()` and, as `CELERY_OUTBOX_APP`, by the
library's relay and checks: never before Django's apps are loaded.
"""

from __future__ import annotations

import orjson
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.registries import MasterRegistry
from django.conf import settings
from django_celery_outbox import OutboxCelery

from django_tools.outbox.signals import OutboxSignals, _disconnect
from django_tools.wire import APPLY_TASK

#: The library's Quick Start: `app = OutboxCelery('myproject')`, configured as the service's
#: own Celery app is (its CELERY_* settings, the peer's overlay on top).
app = OutboxCelery("api_produtos")
app.config_from_object("django.conf:settings", namespace="CELERY")


def body_of(payload: TransportPayload) -> str:
    """The task's argument: django-cqrs's payload as JSON, as the `celery` pipeline sends it
    (a Decimal as its exact string)."""
    return orjson.dumps(payload.to_dict(), default=str).decode()


def send(payloads: list[TransportPayload]) -> None:
    """One `replica.apply_event` task per change, sent the library's way: inside the caller's
    transaction, `send_task` writes the library's outbox row and publishes nothing."""
    for payload in payloads:
        app.send_task(APPLY_TASK, args=[body_of(payload)], queue=settings.REPLICA_TASK_QUEUE)


class CeleryOutboxSignals(OutboxSignals):
    """This project's handlers (django-cqrs's events built in the transaction of the change),
    each change sent through django-celery-outbox instead of this project's outbox."""

    @classmethod
    def install(cls) -> None:
        """Replace the project's outbox handlers (installed by its outbox app, just before)."""
        for model in MasterRegistry.models.values():
            _disconnect(OutboxSignals, model)
            cls.register_model(model)

    @classmethod
    def post_save(cls, sender, **kwargs) -> None:
        payload = cls.save_payload(sender, kwargs["instance"], kwargs)
        if payload is not None:
            send([payload])
            kwargs["instance"].reset_cqrs_saves_count()  # each save its own revision

    @classmethod
    def _post_bulk(cls, sender, **kwargs) -> None:
        using = {"using": kwargs["using"]}
        payloads = [cls.save_payload(sender, instance, using) for instance in kwargs["instances"]]
        send([payload for payload in payloads if payload is not None])

    @classmethod
    def post_delete(cls, sender, **kwargs) -> None:
        payload = cls.delete_payload(sender, kwargs["instance"])
        if payload is not None:
            send([payload])
