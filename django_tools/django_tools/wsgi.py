"""Moved to django_tools.chassis.wsgi; this path is kept for one release."""

from django_tools.chassis import alias

alias(__name__, "django_tools.chassis.wsgi")
