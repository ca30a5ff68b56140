"""Replication off on the master, kept out of the project's code: the REST burst's baseline.

`apis bench` runs its REST burst a second time on an `apis up` started with this folder first on
PYTHONPATH and `APIS_LAB_REPLICATION_OFF=1`. Python runs `sitecustomize.py` from here at start-up,
and that makes `OutboxSignals.install()` (called by the outbox app when Django starts) take
django-cqrs's own handlers off the master models and put none in their place: the same endpoint,
the same transaction, no outbox row and nothing published. What the burst loses in creates/s
with replication on is then the price of replication on the write path, measured.

Lab only: no setting of the services turns replication off, so no deployment can by mistake.
"""

from pathlib import Path

from apis_lab.chaos.import_hook import python_path

#: The PYTHONPATH entry that holds the hook's sitecustomize.py.
FOLDER = str(Path(__file__).resolve().parent)
SWITCH = "APIS_LAB_REPLICATION_OFF"


def environment() -> dict[str, str]:
    """What the processes of `apis up` need: the hook first on their path, and switched on."""
    return {"PYTHONPATH": python_path(FOLDER), SWITCH: "1"}
