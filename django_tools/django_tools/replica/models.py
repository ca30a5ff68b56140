import uuid

from django.db import models
from django.utils.timezone import localtime


def _new_incarnation() -> str:
    return uuid.uuid4().hex


class Tombstone(models.Model):
    """A replicated row that the master deleted, with the revision of the delete.

    A save of the same row at or below that revision is a stale message (a redelivery, another
    worker's late message) and must not bring the row back. Tombstones are invisible to the
    replica's own model and API.
    """

    cqrs_id = models.CharField(max_length=64, verbose_name="CQRS_ID")
    instance_pk = models.CharField(max_length=64, verbose_name="instância (pk)")
    cqrs_revision = models.IntegerField(verbose_name="revisão do delete")
    deleted_at = models.DateTimeField(verbose_name="apagada em")

    class Meta:
        verbose_name = "lápide (linha apagada no master)"
        verbose_name_plural = "lápides (linhas apagadas no master)"
        constraints = [
            models.UniqueConstraint(fields=["cqrs_id", "instance_pk"], name="tombstone_unique")
        ]

    def __str__(self) -> str:
        return f"{self.cqrs_id} {self.instance_pk} apagada na revisão {self.cqrs_revision}"


class ReplicaState(models.Model):
    """The last event applied for each CQRS_ID: what the status page and the lag estimate read."""

    cqrs_id = models.CharField(max_length=64, unique=True, verbose_name="CQRS_ID")
    instance_pk = models.CharField(max_length=64, verbose_name="instância (pk)")
    revision = models.IntegerField(verbose_name="revisão")
    signal_type = models.CharField(max_length=16, verbose_name="sinal")
    master_updated_at = models.DateTimeField(null=True, verbose_name="hora no master")
    applied_at = models.DateTimeField(verbose_name="aplicado em")
    correlation_id = models.CharField(
        max_length=128, blank=True, default="", verbose_name="ID de correlação"
    )
    #: +1 with every transaction that changed rows of this CQRS_ID: caches of the replica's
    #: reads key on it, so a committed change is never answered from an older cache entry.
    version = models.BigIntegerField(default=0, verbose_name="versão")
    #: New with every database: a recreated replica never meets cache entries of an older one.
    incarnation = models.CharField(
        max_length=32, default=_new_incarnation, verbose_name="encarnação"
    )

    class Meta:
        verbose_name = "estado da réplica"
        verbose_name_plural = "estados da réplica"

    def __str__(self) -> str:
        applied = localtime(self.applied_at).strftime("%Y-%m-%d %H:%M:%S %Z")
        return f"{self.cqrs_id}: {self.instance_pk} revisão {self.revision}, aplicada em {applied}"


class DeadLetter(ReplicaState):
    """No rows of its own: the replica's dead-letter queue (on the broker) as an entry of the
    admin's index and sidebar, whose list is the dead-letter page (replica.admin.DeadLetterAdmin).
    A proxy, so it has no table and its own view permission ("Can view mensagem morta")."""

    class Meta:
        proxy = True
        verbose_name = "mensagem morta"
        verbose_name_plural = "mensagens mortas"
