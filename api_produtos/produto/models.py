from decimal import Decimal

from dj_cqrs.mixins import MasterMixin
from django.core.validators import MaxLengthValidator, MinLengthValidator, MinValueValidator
from django.db import models

from django_tools.chassis.ninja import no_negative_zero
from django_tools.outbox.models import OutboxMasterManager, TransactionalWritesMixin

#: The longest `descricao` (characters). A product description is a few paragraphs; 10,000
#: characters is several pages of text, yet keeps an event under ~124 KB however it is escaped
#: (django_tools.limits.MAX_MESSAGE_BYTES is twice that), so a relay batch or a consumer
#: prefetch of 500 events holds tens of megabytes, not gigabytes.
DESCRICAO_MAX_LENGTH = 10_000


class Produto(TransactionalWritesMixin, MasterMixin):
    """The product, owned by this service. Every change writes its django-cqrs event
    (`CQRS_ID = "produto"`) to the outbox in the same transaction (django_tools.outbox); the
    relay publishes it and the replicas apply it in revision order."""

    CQRS_ID = "produto"

    objects = models.Manager()
    cqrs = OutboxMasterManager()

    sku = models.CharField(
        max_length=64, unique=True, validators=[MinLengthValidator(1)], verbose_name="SKU"
    )
    nome = models.CharField(max_length=200, validators=[MinLengthValidator(1)])
    # A validator (full_clean: the services and the admin), not TextField's max_length, which
    # enforces nothing and would rebuild the table on SQLite; no CHECK in the database either:
    # rows written before the limit stay readable and migrate never fails on them (an update
    # of one must shorten it — the replica would refuse its event).
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
    criado_em = models.DateTimeField(auto_now_add=True, verbose_name="criado em")
    atualizado_em = models.DateTimeField(auto_now=True, verbose_name="atualizado em")
    # django-cqrs's own fields (MasterMixin), as they are, with the console's labels instead
    # of their English help text.
    cqrs_revision = models.IntegerField(
        default=0,
        verbose_name="revisão CQRS",
        help_text="Sobe a cada mudança; as réplicas aplicam só o que a avança.",
    )
    cqrs_updated = models.DateTimeField(
        auto_now=True,
        verbose_name="atualizado (CQRS)",
        help_text="Hora da última mudança, enviada com o evento.",
    )

    class Meta:
        verbose_name = "produto"
        verbose_name_plural = "produtos"
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(preco__gte=0), name="produto_preco_gte_0"),
            models.CheckConstraint(
                condition=models.Q(estoque__gte=0), name="produto_estoque_gte_0"
            ),
        ]
        indexes = [models.Index(fields=["ativo", "id"], name="produto_ativo_id_idx")]

    def __str__(self) -> str:
        return f"{self.sku} — {self.nome}"

    def clean(self) -> None:
        # "-0" passes preco >= 0 and would be answered and replicated as "-0.00".
        if isinstance(self.preco, Decimal):
            self.preco = no_negative_zero(self.preco)

    def to_cqrs_dict(self, using: str | None = None, sync: bool = False) -> dict:
        data = super().to_cqrs_dict(using, sync=sync)
        # ujson would turn a Decimal into a float; the exact string keeps "19.90" intact on
        # the wire and any replica's DecimalField parses it.
        data["preco"] = f"{no_negative_zero(Decimal(data['preco'])):.2f}"
        return data
