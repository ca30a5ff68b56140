"""Moved to django_tools.chassis.settings; these paths are kept for one release."""
