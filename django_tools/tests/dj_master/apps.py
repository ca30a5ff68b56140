from django.apps import AppConfig


class DjMasterConfig(AppConfig):
    name = "dj_master"
    default_auto_field = "django.db.models.BigAutoField"
