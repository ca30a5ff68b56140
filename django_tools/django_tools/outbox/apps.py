from django.apps import AppConfig


class OutboxConfig(AppConfig):
    name = "django_tools.outbox"
    label = "cqrs_outbox"
    verbose_name = "Outbox CQRS"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        import django_tools.outbox.checks  # noqa: F401 - registers the system checks
        from django_tools.outbox.signals import OutboxSignals

        # Every django-cqrs master model now writes its events to the outbox, in the transaction
        # of the change, instead of publishing after the commit.
        OutboxSignals.install()

        from django_tools.observability.metrics import register_scrape_collector
        from django_tools.outbox.metrics import OutboxBacklogCollector, RelayHeartbeatCollector

        register_scrape_collector(OutboxBacklogCollector)
        register_scrape_collector(RelayHeartbeatCollector)
