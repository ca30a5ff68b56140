from decimal import Decimal

from dj_cqrs.mixins import ReplicaMixin
from django.core.validators import MaxLengthValidator, MinValueValidator
from django.db import models

from django_tools.replica.managers import ConvergentReplicaManager

#: The master's limits (api_produtos: sku 64, nome 200, descricao DESCRICAO_MAX_LENGTH): an event
#: over them — from a stock django-cqrs master that does not check them — cannot be applied and
#: is dead-lettered as `permanent`.
DESCRICAO_MAX_LENGTH = 10_000


class ProdutoMirror(ReplicaMixin):
    """Read-only copy of api_produtos' Produto, kept by the django-cqrs consumer.

    `cqrs_revision` (exposed as `revisao`) is the master's revision of the row. Rows change only
    through `django_tools.replica.apply` (via the `cqrs` manager): events that do not advance
    the revision are ignored, and a deleted product leaves a tombstone so that no late save
    brings it back.
    """

    CQRS_ID = "produto"

    objects = models.Manager()
    cqrs = ConvergentReplicaManager()

    id = models.BigIntegerField(primary_key=True, verbose_name="ID")
    # Not unique here: the master owns that rule, and a swap of two SKUs may arrive in any
    # order across products.
    sku = models.CharField(max_length=64, db_index=True, verbose_name="SKU")
    nome = models.CharField(max_length=200)
    descricao = models.TextField(
        blank=True,
        default="",
        validators=[MaxLengthValidator(DESCRICAO_MAX_LENGTH)],
        verbose_name="descrição",
    )
    preco = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        validators=[MinValueValidator(Decimal("0"))],
        verbose_name="preço",
    )
    estoque = models.PositiveIntegerField(default=0)
    ativo = models.BooleanField(default=True)
    criado_em = models.DateTimeField(verbose_name="criado em")
    atualizado_em = models.DateTimeField(verbose_name="atualizado em")
    # django-cqrs's own fields (ReplicaMixin), as they are, with the console's labels.
    cqrs_revision = models.IntegerField(verbose_name="revisão CQRS")
    cqrs_updated = models.DateTimeField(verbose_name="atualizado no master (CQRS)")

    class Meta:
        verbose_name = "produto (réplica)"
        verbose_name_plural = "produtos (réplica)"
        indexes = [
            models.Index(fields=["-atualizado_em", "-id"], name="feed_atualizado_idx"),
            models.Index(fields=["ativo", "-atualizado_em"], name="feed_ativo_atualizado_idx"),
            models.Index(fields=["preco"], name="feed_preco_idx"),
            models.Index(fields=["nome"], name="feed_nome_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.sku} — {self.nome} (rev {self.cqrs_revision})"
