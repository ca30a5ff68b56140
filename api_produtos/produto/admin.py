from django.contrib import admin

from produto.models import Produto


@admin.register(Produto)
class ProdutoAdmin(admin.ModelAdmin):
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
