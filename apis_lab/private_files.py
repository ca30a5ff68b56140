"""Files of a private server that hold a secret (an Erlang cookie, a password): written readable
by their owner only from the first byte, never passed on a command line."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """`text` in `path`, readable by its owner only from the first byte written."""
    with contextlib.suppress(FileNotFoundError):
        path.chmod(0o600)  # a read-only cookie kept from an earlier run is rewritten
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    path.chmod(mode)
