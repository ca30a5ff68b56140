"""The lab's start-up hooks (`crash_hook`, `stock_hook`): each is a folder put first on a
process's PYTHONPATH, whose `sitecustomize.py` changes one module of the project as it is
imported — so the project's code carries nothing of the lab's faults."""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from collections.abc import Callable
from types import ModuleType


def python_path(folder: str) -> str:
    """PYTHONPATH with `folder` first (where Python finds the hook's sitecustomize.py)."""
    return os.pathsep.join(part for part in (folder, os.environ.get("PYTHONPATH", "")) if part)


def wrap_on_import(target: str, wrap: Callable[[ModuleType], None]) -> None:
    """Call `wrap(module)` right after `target` is executed, the first time it is imported."""

    class Finder(importlib.abc.MetaPathFinder):
        """Finds nothing itself: lets the usual finders find the module, then wraps what its
        loader executes."""

        def find_spec(self, name, path, target_module=None):
            if name != target:
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
