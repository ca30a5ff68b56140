from django.apps import AppConfig
from django.conf import settings

from django_tools.replica import stock_retry


class ReplicaConfig(AppConfig):
    name = "django_tools.replica"
    label = "cqrs_replica"
    verbose_name = "Réplica CQRS"
    default_auto_field = "django.db.models.BigAutoField"

    def __init__(self, app_name, app_module) -> None:
        super().__init__(app_name, app_module)
        # Django creates every app's config before any is ready: django-cqrs's ready() fills
        # its defaults into CQRS['replica'], and only what the service wrote there may change
        # the retries (django_tools.replica.stock_retry).
        stock_retry.remember(getattr(settings, "CQRS", None))

    def ready(self) -> None:
        import django_tools.replica.checks  # noqa: F401 - registers the system checks
        from django_tools.observability.metrics import register_scrape_collector
        from django_tools.replica.metrics import (
            ConsumerHeartbeatCollector,
            ReplicaQueuesCollector,
        )

        register_scrape_collector(ReplicaQueuesCollector)
        register_scrape_collector(ConsumerHeartbeatCollector)
