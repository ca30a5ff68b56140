"""Authentication that never lets a default password in from another machine (see
django_tools.exposure)."""

from __future__ import annotations

from django.contrib.auth.backends import ModelBackend

from django_tools.exposure import is_default_password, is_loopback_request, logger


class DefaultPasswordBackend(ModelBackend):
    """Django's own authentication, except that a default password (admin/admin) never logs
    anyone in from another machine, whatever else is configured."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if is_default_password(password, username) and not is_loopback_request(request):
            logger.warning(
                "refused a login of %r from %s: a default password, off loopback",
                username,
                request.META.get("REMOTE_ADDR"),
            )
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
