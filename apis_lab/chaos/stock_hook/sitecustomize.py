"""Lab only (see apis_lab/chaos/stock_hook/__init__.py): the master publishes on commit, as
stock django-cqrs does, instead of writing to the outbox. Loaded by Python at start-up only in
the processes the fault suite starts with this folder on PYTHONPATH."""

import os


def _keep_stock_handlers(module) -> None:
    # django-cqrs registered its own handlers when the model class was built; without
    # install() nothing replaces them.
    module.OutboxSignals.install = classmethod(lambda cls: None)


if os.environ.get("APIS_LAB_STOCK_MASTER") == "1":
    from apis_lab.chaos.import_hook import wrap_on_import

    wrap_on_import("django_tools.outbox.signals", _keep_stock_handlers)
