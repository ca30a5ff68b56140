from django.apps import AppConfig


class DjReplicaConfig(AppConfig):
    name = "dj_replica"
    default_auto_field = "django.db.models.BigAutoField"
