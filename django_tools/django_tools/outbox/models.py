from dj_cqrs.managers import MasterManager
from django.db import models, router, transaction
from django.utils.timezone import localtime


class OutboxEvent(models.Model):
    """A django-cqrs event waiting to be (or already) published.

    `body` is the exact message (`TransportPayload.to_dict()` as JSON), so the relay only
    copies bytes and the wire format stays django-cqrs's own.
    """

    # The labels are the console's (Portuguese, like its operators).
    cqrs_id = models.CharField(max_length=64, verbose_name="CQRS_ID")
    instance_pk = models.CharField(max_length=64, verbose_name="instância (pk)")
    signal_type = models.CharField(max_length=16, verbose_name="sinal")
    revision = models.IntegerField(null=True, verbose_name="revisão")
    routing_key = models.CharField(max_length=255, verbose_name="chave de roteamento")
    body = models.TextField(verbose_name="corpo")
    correlation_id = models.CharField(
        max_length=128, blank=True, default="", verbose_name="ID de correlação"
    )
    #: The W3C trace context of the change (JSON of traceparent/tracestate), when tracing is on.
    trace_context = models.CharField(
        max_length=512, blank=True, default="", verbose_name="contexto de rastreamento"
    )
    created_at = models.DateTimeField(db_index=True, verbose_name="criado em")
    published_at = models.DateTimeField(null=True, blank=True, verbose_name="publicado em")

    class Meta:
        verbose_name = "evento do outbox"
        verbose_name_plural = "eventos do outbox"
        indexes = [
            # What the relay scans: only the unpublished rows, in id order.
            models.Index(
                fields=["id"],
                name="outbox_unpublished_idx",
                condition=models.Q(published_at__isnull=True),
            ),
            models.Index(fields=["published_at"], name="outbox_published_at_idx"),
        ]

    def __str__(self) -> str:
        """The title of the admin's page of the row: `evento #12: SAVE produto 7 (publicado
        em 2026-01-01 10:00:02 UTC)` (seconds: the microseconds say nothing to an operator)."""
        if self.published_at:
            state = f"publicado em {localtime(self.published_at).strftime('%Y-%m-%d %H:%M:%S %Z')}"
        else:
            state = "pendente"
        return f"evento #{self.pk}: {self.signal_type} {self.cqrs_id} {self.instance_pk} ({state})"


class TransactionalWritesMixin:
    """For master models: `save()` and `delete()` always run in a transaction, so that the
    change and its outbox row commit together even when the caller did not open one."""

    # savepoint=False: inside the caller's transaction this joins it (a failure rolls the whole
    # transaction back, as it must: the change and its event go together), instead of paying a
    # SAVEPOINT and a RELEASE for every write.

    def save(self, *args, **kwargs):
        using = kwargs.get("using") or router.db_for_write(type(self))
        with transaction.atomic(using=using, savepoint=False):
            return super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        using = kwargs.get("using") or router.db_for_write(type(self))
        with transaction.atomic(using=using, savepoint=False):
            return super().delete(*args, **kwargs)


class OutboxMasterManager(MasterManager):
    """django-cqrs's `cqrs` manager whose bulk operations run in one transaction with their
    outbox rows (django-cqrs sends its bulk signals after its own atomic block)."""

    def bulk_create(self, objs, **kwargs):
        with transaction.atomic(using=self.db):
            return super().bulk_create(objs, **kwargs)

    def bulk_update(self, queryset, **kwargs):
        with transaction.atomic(using=queryset.db):
            return super().bulk_update(queryset, **kwargs)
