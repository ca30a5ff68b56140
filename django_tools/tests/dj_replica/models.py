from decimal import Decimal

from dj_cqrs.mixins import ReplicaMixin
from django.core.validators import MinValueValidator
from django.db import models

from django_tools.replica.managers import ConvergentReplicaManager


class BookReplica(ReplicaMixin):
    """The replica of dj_master's Book (same CQRS_ID, same field names), applied only through
    django_tools.replica (its `cqrs` manager): revisions, tombstones, validation by its fields."""

    CQRS_ID = "book"

    objects = models.Manager()
    cqrs = ConvergentReplicaManager()

    id = models.BigIntegerField(primary_key=True)
    # Not unique: the master owns that rule, and a swap of two values may arrive in any order.
    isbn = models.CharField(max_length=64, db_index=True)
    title = models.CharField(max_length=200)
    summary = models.TextField(blank=True, default="")
    price = models.DecimalField(
        max_digits=12, decimal_places=2, validators=[MinValueValidator(Decimal("0"))]
    )
    copies = models.IntegerField(default=0, validators=[MinValueValidator(0)])
    in_print = models.BooleanField(default=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.isbn} {self.title} (rev {self.cqrs_revision})"
