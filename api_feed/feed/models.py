from decimal import Decimal

from dj_cqrs.mixins import ReplicaMixin
from django.core.validators import MinValueValidator
from django.db import models

from django_tools.replica.managers import ConvergentReplicaManager


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

    id = models.BigIntegerField(primary_key=True)
    # Not unique here: the master owns that rule, and a swap of two SKUs may arrive in any
    # order across products.
    sku = models.CharField(max_length=64, db_index=True)
    nome = models.CharField(max_length=200)
    descricao = models.TextField(blank=True, default="")
    preco = models.DecimalField(
        max_digits=12, decimal_places=2, validators=[MinValueValidator(Decimal("0"))]
    )
    estoque = models.PositiveIntegerField(default=0)
    ativo = models.BooleanField(default=True)
    criado_em = models.DateTimeField()
    atualizado_em = models.DateTimeField()

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
