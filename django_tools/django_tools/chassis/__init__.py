"""The services' chassis: what api_produtos and api_feed share as Django projects, and what a
project using only the library's apps (django_tools.outbox, django_tools.replica) leaves out.

- `settings/`: the shared settings modules (Django itself, django-cqrs, Celery, logging,
  tracing), star-imported by each service's settings;
- `urls`, `views`: the URL layout (admin, /api/, /health, /metrics) and the JSON error views;
- `health`: /health, /health/live, /health/ready;
- `ninja`, `errors`: the API factory, its JSON error format and the field types of the APIs;
- `wsgi`, `gunicorn_conf`, `celery`: how a service is served and its Celery app.

The chassis imports the library; the library never imports the chassis (a test holds it:
django_tools/tests/test_library_boundary.py). The old paths (`django_tools.settings.*`,
`django_tools.urls`, …) are kept for one release as aliases of these modules.
"""

from __future__ import annotations

import importlib
import sys
import warnings


def alias(old: str, new: str) -> None:
    """Make the module `old` the module `new` (one module under two names, so patching or
    reloading either acts on the same one), with a DeprecationWarning naming the new path."""
    warnings.warn(f"{old} moved to {new}", DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
