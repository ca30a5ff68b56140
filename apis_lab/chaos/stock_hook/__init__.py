"""Stock django-cqrs on the master, kept out of the project's code.

`apis chaos --pipeline stock` starts api_produtos' web server with this folder first on its
PYTHONPATH and `APIS_LAB_STOCK_MASTER=1`. Python runs `sitecustomize.py` from here at start-up,
and that makes `OutboxSignals.install()` (called by the outbox app when Django starts) a no-op:
the model keeps django-cqrs's own signal handlers, which publish each change when its transaction
commits — what `apis bench` does in its writer process with `OutboxSignals.uninstall()`.
"""

from pathlib import Path

from apis_lab.chaos.import_hook import python_path

#: The PYTHONPATH entry that holds the hook's sitecustomize.py.
FOLDER = str(Path(__file__).resolve().parent)


def environment() -> dict[str, str]:
    """What the master's web process needs: the hook first on its path, and switched on."""
    return {"PYTHONPATH": python_path(FOLDER), "APIS_LAB_STOCK_MASTER": "1"}
