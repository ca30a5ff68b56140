from django.apps import AppConfig


class DjangoToolsConfig(AppConfig):
    name = "django_tools"
    verbose_name = "django_tools"

    def ready(self) -> None:
        from django.conf import settings
        from django.contrib import admin

        from django_tools import tracing
        from django_tools.admin import set_up_console
        from django_tools.exposure import checks  # noqa: F401 - registers the deploy check

        # Off (and free) unless an OTLP endpoint is configured.
        tracing.setup(getattr(settings, "SERVICE_NAME", "service"))
        set_up_console(admin.site)
