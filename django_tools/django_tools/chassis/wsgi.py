"""WSGI application factory both services use."""

from django.core.handlers.wsgi import WSGIHandler
from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver


def application() -> WSGIHandler:
    app = get_wsgi_application()
    # Import the URLconf (and with it every API schema) now, while the server boots, rather
    # than in the first request a worker serves.
    get_resolver().url_patterns  # noqa: B018
    return app
