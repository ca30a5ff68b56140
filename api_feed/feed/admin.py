from django.contrib import admin

from django_tools.admin import ReadOnlyModelAdmin
from feed.models import ProdutoMirror


@admin.register(ProdutoMirror)
class ProdutoMirrorAdmin(ReadOnlyModelAdmin):
    """Read-only: the replica changes only through replication (tombstones, the last applied
    state and the dead letters are django_tools.replica.admin's)."""

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
