"""While public defaults are in effect, the service answers this machine only (see
django_tools.exposure)."""

from __future__ import annotations

import os

from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpRequest, JsonResponse

from django_tools.exposure import DOCS, env_problems, is_loopback_request, logger


class LoopbackOnlyMiddleware:
    """While public defaults are in effect (see the module), a client on another machine gets
    a JSON 403 naming what to set; with real settings this middleware removes itself."""

    def __init__(self, get_response) -> None:
        self.problems = env_problems(os.environ, getattr(settings, "SERVICE_NAME", None))
        if not self.problems:
            raise MiddlewareNotUsed
        self.get_response = get_response
        self.detail = (
            "this service answers this machine only while public defaults are in effect: set "
            f"{', '.join(self.problems)} (see {DOCS})"
        )

    def __call__(self, request: HttpRequest):
        if is_loopback_request(request):
            return self.get_response(request)
        logger.warning(
            "refused a request from %s: public defaults in effect (%s)",
            request.META.get("REMOTE_ADDR"),
            ", ".join(self.problems),
        )
        return JsonResponse({"detail": self.detail}, status=403)
