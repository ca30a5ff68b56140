"""The fault kinds by name, in the order the schedule draws them, with the runs each needs.

Light on purpose (no pika, no processes): the `apis` CLI lists them in `apis chaos --help`
without importing the suite. `faults.FAULTS` is built from the classes and refuses to load when
it and this list disagree; tests/test_apis_cli.py checks the runs against the classes' flags.
"""

from __future__ import annotations

#: kind → the runs it is scheduled in ("" for every run).
FAULT_KINDS: dict[str, str] = {
    "broker-restart": "",
    "connections-closed": "",
    "kill-relay": "",
    "kill-consumer": "",
    "kill-consumer-worker": "",
    "kill-web-worker": "",
    "kill-celery": "",
    "queue-deleted": "",
    "redis-down": "",
    "poison": "",
    "db-lock": "",
    "blackhole": "",
    "pause-broker": "",
    "pause-relay": "",
    "pause-consumer-worker": "",
    "pause-database": "postgres",
    "disk-alarm": "",
    "pg-restart": "postgres",
    "crash-loop": "",
    "migrate-killed": "one node",
    "node-loss": "with --cluster",
    "partition": "with --cluster",
}


def listed() -> str:
    """The kinds for a help text: `broker-restart, …, pause-database (postgres), …`."""
    return ", ".join(f"{kind} ({runs})" if runs else kind for kind, runs in FAULT_KINDS.items())
