#!/usr/bin/env python
"""Django's command-line utility for api_feed (the replica service)."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "api_feed.settings")
    from django.core.management import execute_from_command_line

    from django_tools.env import exit_on_bad_setting

    # A bad setting (DEBUG=talvez, a DATABASE_URL that cannot be read): one line, exit 2.
    with exit_on_bad_setting("api_feed"):
        execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
