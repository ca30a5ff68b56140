"""Lab only (see apis_lab/chaos/stock_hook/__init__.py): the master publishes on commit, as
stock django-cqrs does, instead of writing to the outbox. Loaded by Python at start-up only in
the processes the fault suite starts with this folder on PYTHONPATH."""

import os

_TARGET = "django_tools.outbox.signals"


def _install() -> None:
    import importlib.abc
    import importlib.util
    import sys

    def wrap(module) -> None:
        # django-cqrs registered its own handlers when the model class was built; without
        # install() nothing replaces them.
        module.OutboxSignals.install = classmethod(lambda cls: None)

    class Finder(importlib.abc.MetaPathFinder):
        """Finds nothing itself: lets the usual finders find the module, then wraps what its
        loader executes."""

        def find_spec(self, name, path, target=None):
            if name != _TARGET:
                return None
            sys.meta_path.remove(self)  # once is enough; and no recursion below
            spec = importlib.util.find_spec(name)
            if spec is None or spec.loader is None:
                return spec
            execute = spec.loader.exec_module

            def exec_module(module):
                execute(module)
                wrap(module)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, Finder())


if os.environ.get("APIS_LAB_STOCK_MASTER") == "1":
    _install()
