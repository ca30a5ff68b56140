"""`python -m django_tools.chassis.settings.check <settings module> <program>`: import a service's
settings and exit 0, or say what is wrong with a setting in one line and exit 2. `apis up` runs
it for both services before it starts anything."""

from __future__ import annotations

import importlib
import sys

from django_tools.env import exit_on_bad_setting


def main(argv: list[str]) -> None:
    module, program = argv
    with exit_on_bad_setting(program):
        importlib.import_module(module)


if __name__ == "__main__":
    main(sys.argv[1:])
