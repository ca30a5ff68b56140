from decimal import Decimal

import pytest

from django_tools.chassis.errors import ConflictError
from produto import services
from produto.models import Produto

pytestmark = pytest.mark.django_db


def make(**overrides) -> Produto:
    fields = {"sku": "SKU-1", "nome": "Produto 1", "preco": Decimal("10.00")}
    fields.update(overrides)
    return services.produto_create(**fields)


def test_create_stores_every_field_with_defaults():
    produto = make(descricao="d")
    stored = Produto.objects.get(pk=produto.pk)
    assert (stored.sku, stored.nome, stored.descricao) == ("SKU-1", "Produto 1", "d")
    assert stored.preco == Decimal("10.00")
    assert (stored.estoque, stored.ativo, stored.cqrs_revision) == (0, True, 0)
    assert stored.criado_em is not None and stored.atualizado_em is not None


def test_create_with_an_existing_sku_is_a_conflict_and_changes_nothing():
    make()
    with pytest.raises(ConflictError, match="SKU-1"):
        make(nome="Outro")
    assert Produto.objects.count() == 1


def test_update_changes_fields_and_bumps_the_revision():
    produto = make()
    updated = services.produto_update(produto_id=produto.pk, data={"preco": Decimal("12.5")})
    assert updated.preco == Decimal("12.50")
    assert updated.cqrs_revision == 1
    services.produto_update(produto_id=produto.pk, data={"estoque": 3, "ativo": False})
    stored = Produto.objects.get(pk=produto.pk)
    assert (stored.estoque, stored.ativo, stored.cqrs_revision) == (3, False, 2)


def test_update_without_a_change_keeps_the_revision():
    produto = make()
    services.produto_update(
        produto_id=produto.pk, data={"preco": Decimal("10"), "nome": "Produto 1"}
    )
    assert Produto.objects.get(pk=produto.pk).cqrs_revision == 0


def test_update_to_another_products_sku_is_a_conflict():
    make(sku="A")
    b = make(sku="B")
    with pytest.raises(ConflictError):
        services.produto_update(produto_id=b.pk, data={"sku": "A"})
    assert Produto.objects.get(pk=b.pk).sku == "B"


def test_update_refuses_fields_that_are_not_writable():
    produto = make()
    with pytest.raises(ValueError, match="cqrs_revision"):
        services.produto_update(produto_id=produto.pk, data={"cqrs_revision": 99})


def test_update_and_delete_of_a_missing_product_raise_does_not_exist():
    with pytest.raises(Produto.DoesNotExist):
        services.produto_update(produto_id=404, data={"nome": "x"})
    with pytest.raises(Produto.DoesNotExist):
        services.produto_delete(produto_id=404)


def test_delete_removes_the_product():
    produto = make()
    services.produto_delete(produto_id=produto.pk)
    assert not Produto.objects.filter(pk=produto.pk).exists()


def test_payload_carries_the_price_as_an_exact_string():
    produto = make(preco=Decimal("19.9"))
    data = Produto.objects.get(pk=produto.pk).to_cqrs_dict()
    assert data["preco"] == "19.90"
    assert {
        "id",
        "sku",
        "nome",
        "descricao",
        "estoque",
        "ativo",
        "criado_em",
        "atualizado_em",
        "cqrs_revision",
        "cqrs_updated",
    } <= set(data)
