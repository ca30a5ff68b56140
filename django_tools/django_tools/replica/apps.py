from django.apps import AppConfig


class ReplicaConfig(AppConfig):
    name = "django_tools.replica"
    label = "cqrs_replica"
    verbose_name = "CQRS replica"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        import django_tools.replica.checks  # noqa: F401 - registers the system checks
        from django_tools.observability.metrics import register_scrape_collector
        from django_tools.replica.metrics import ReplicaQueuesCollector

        register_scrape_collector(ReplicaQueuesCollector)
