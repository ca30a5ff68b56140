"""Lab only (see apis_lab/bench/off_hook/__init__.py): the master writes its changes and nothing
else, no outbox row, no publish. Loaded by Python at start-up only in the processes the bench
starts with this folder on PYTHONPATH."""

import os


def _no_replication(module) -> None:
    from dj_cqrs.registries import MasterRegistry
    from dj_cqrs.signals import MasterSignals

    def install(cls) -> None:
        # django-cqrs registered its own handlers when the model class was built: those go
        # too, and nothing replaces them.
        for model in MasterRegistry.models.values():
            module._disconnect(MasterSignals, model)

    module.OutboxSignals.install = classmethod(install)


if os.environ.get("APIS_LAB_REPLICATION_OFF") == "1":
    from apis_lab.chaos.import_hook import wrap_on_import

    wrap_on_import("django_tools.outbox.signals", _no_replication)
