from django.contrib import admin

from feed.models import ProdutoMirror


@admin.register(ProdutoMirror)
class ProdutoMirrorAdmin(admin.ModelAdmin):
    """Read-only: the replica changes only through replication."""

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

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
