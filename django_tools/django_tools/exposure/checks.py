"""`manage.py check --deploy`: a public default still in effect is a deployment problem."""

from __future__ import annotations

import os

from django.conf import settings
from django.core import checks

from django_tools.exposure import DOCS, env_problems


@checks.register(checks.Tags.security, deploy=True)
def check_public_defaults(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    problems = env_problems(os.environ, getattr(settings, "SERVICE_NAME", None))
    if not problems:
        return []
    return [
        checks.Warning(
            f"public defaults in effect: {', '.join(problems)}; the service answers loopback "
            "clients only and refuses to start bound off loopback",
            hint=f"set them for any deployment reachable from other machines ({DOCS})",
            id="django_tools.W010",
        )
    ]
