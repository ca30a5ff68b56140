"""Lab only (see apis_lab/chaos/crash_hook/__init__.py): makes a consumer worker SIGKILL itself
when it decodes a message carrying `APIS_LAB_CRASH_MARKER`. Loaded by Python at start-up only
in the processes the fault suite starts with this folder on PYTHONPATH."""

import os
import signal
import sys

_MARKER = os.environ.get("APIS_LAB_CRASH_MARKER", "").encode()


def _die_on_the_marker(module) -> None:
    decode = module.decode

    def decode_or_die(body, *args, **kwargs):
        raw = body.encode() if isinstance(body, str) else bytes(body)
        if _MARKER in raw:
            sys.stderr.write(
                f"apis-lab crash hook: pid {os.getpid()} decoded the crash-loop marker; SIGKILL\n"
            )
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return decode(body, *args, **kwargs)

    module.decode = decode_or_die


if _MARKER:
    from apis_lab.chaos.import_hook import wrap_on_import

    wrap_on_import("django_tools.replica.messages", _die_on_the_marker)
