from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class DjReplicaConfig(AppConfig):
    name = "dj_replica"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from dj_replica.models import HOOK_CALLS, AuthorHooked

        def saved(sender, instance, created, **kwargs):
            HOOK_CALLS.append(("post_save", instance.pk, instance.cqrs_revision, created))

        def deleted(sender, instance, **kwargs):
            HOOK_CALLS.append(("post_delete", instance.pk, instance.cqrs_revision, None))

        post_save.connect(saved, sender=AuthorHooked, weak=False)
        post_delete.connect(deleted, sender=AuthorHooked, weak=False)
