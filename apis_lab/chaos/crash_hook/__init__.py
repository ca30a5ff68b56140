"""The lab's crash-loop trigger, kept out of the project's code.

The fault suite starts the replica's consumer with this folder first on its PYTHONPATH and
`APIS_LAB_CRASH_MARKER` in its environment. Python then runs `sitecustomize.py` from here at the
start of the consumer and of each of its worker processes (they inherit both), and that wraps
`django_tools.replica.messages.decode` as the module is imported: a message whose body carries
the marker makes the worker reading it SIGKILL itself — every time it is delivered, like a
message that crashes a C extension or runs a worker out of memory. No other process of the lab
gets the hook, and nothing outside the lab ever sets the variable.
"""

from pathlib import Path

from apis_lab.chaos.import_hook import python_path

#: The text in a message's body that kills the worker decoding it.
MARKER = "apis-lab-crash-loop"
#: What a worker prints (to its log) just before it kills itself.
KILL_LINE = "apis-lab crash hook:"
#: The PYTHONPATH entry that holds the hook's sitecustomize.py.
FOLDER = str(Path(__file__).resolve().parent)


def environment() -> dict[str, str]:
    """What a process's environment needs for the hook: its folder first on the path, and the
    marker."""
    return {"PYTHONPATH": python_path(FOLDER), "APIS_LAB_CRASH_MARKER": MARKER}
