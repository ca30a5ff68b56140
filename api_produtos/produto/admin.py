from django.contrib import admin

from django_tools.outbox.admin import OutboxSyncAdminMixin
from produto.models import Produto


@admin.register(Produto)
class ProdutoAdmin(OutboxSyncAdminMixin, admin.ModelAdmin):
    """Products, with django-cqrs's resync action: each selected product goes to the outbox as
    a SYNC, and the relay publishes it (the outbox page is django_tools.outbox.admin's)."""

    list_display = (
        "id",
        "sku",
        "nome",
        "preco",
        "estoque",
        "ativo",
        "cqrs_revision",
        "atualizado_em",
    )
    list_filter = ("ativo",)
    search_fields = ("sku", "nome")
    readonly_fields = ("cqrs_revision", "cqrs_updated", "criado_em", "atualizado_em")
