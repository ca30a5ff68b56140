"""WSGI application factory both services use."""

import os

from django.core.handlers.wsgi import WSGIHandler
from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

from django_tools.env import exit_on_bad_setting


def application() -> WSGIHandler:
    # A bad setting stops the server in one line and exit 2 (gunicorn --preload loads the app
    # in its master, before any worker), instead of a traceback per worker.
    program = os.environ.get("DJANGO_SETTINGS_MODULE", "wsgi").split(".")[0]
    with exit_on_bad_setting(program):
        app = get_wsgi_application()
        # Import the URLconf (and with it every API schema) now, while the server boots,
        # rather than in the first request a worker serves.
        get_resolver().url_patterns  # noqa: B018
    return app
