from decimal import Decimal

from dj_cqrs.mixins import MasterMixin
from django.core.validators import MinValueValidator
from django.db import models

from django_tools.outbox.models import OutboxMasterManager, TransactionalWritesMixin


class Book(TransactionalWritesMixin, MasterMixin):
    """A master model as a service declares one: every change leaves its django-cqrs event
    (`CQRS_ID = "book"`) in the outbox, in the transaction of the change."""

    CQRS_ID = "book"

    objects = models.Manager()
    cqrs = OutboxMasterManager()

    isbn = models.CharField(max_length=64, unique=True)
    title = models.CharField(max_length=200)
    summary = models.TextField(blank=True, default="")
    price = models.DecimalField(
        max_digits=12, decimal_places=2, validators=[MinValueValidator(Decimal("0"))]
    )
    copies = models.IntegerField(default=0, validators=[MinValueValidator(0)])
    in_print = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.isbn} {self.title}"

    def to_cqrs_dict(self, using: str | None = None, sync: bool = False) -> dict:
        data = super().to_cqrs_dict(using, sync=sync)
        # The outbox writes payloads with orjson, which has no Decimal (stock django-cqrs's
        # ujson makes it a float): the exact string, as a master with money fields sends it.
        data["price"] = f"{Decimal(data['price']):.2f}"
        return data
