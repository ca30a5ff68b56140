"""Lab only (see apis_lab/chaos/crash_hook/__init__.py): makes a consumer worker SIGKILL itself
when it decodes a message carrying `APIS_LAB_CRASH_MARKER`. Loaded by Python at start-up only
in the processes the fault suite starts with this folder on PYTHONPATH."""

import os

_MARKER = os.environ.get("APIS_LAB_CRASH_MARKER", "")
_TARGET = "django_tools.replica.messages"


def _install() -> None:
    import importlib.abc
    import importlib.util
    import signal
    import sys

    marker = _MARKER.encode()

    def wrap(module) -> None:
        decode = module.decode

        def decode_or_die(body, *args, **kwargs):
            raw = body.encode() if isinstance(body, str) else bytes(body)
            if marker in raw:
                sys.stderr.write(
                    f"apis-lab crash hook: pid {os.getpid()} decoded the crash-loop marker; "
                    "SIGKILL\n"
                )
                sys.stderr.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return decode(body, *args, **kwargs)

        module.decode = decode_or_die

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


if _MARKER:
    _install()
