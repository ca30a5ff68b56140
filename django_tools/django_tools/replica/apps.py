from django.apps import AppConfig


class ReplicaConfig(AppConfig):
    name = "django_tools.replica"
    label = "cqrs_replica"
    verbose_name = "CQRS replica"
    default_auto_field = "django.db.models.BigAutoField"
