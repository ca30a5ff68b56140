from decimal import Decimal

import pytest
from django.http import Http404

from produto import selectors, services

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalogue():
    rows = [
        ("CAF-1", "Café forte", True),
        ("CHA-1", "Chá verde", True),
        ("CAF-2", "Caneca", False),
    ]
    return [
        services.produto_create(sku=sku, nome=nome, ativo=ativo, preco=Decimal("1"))
        for sku, nome, ativo in rows
    ]


def test_list_is_ordered_by_id(catalogue):
    assert [p.sku for p in selectors.produto_list()] == ["CAF-1", "CHA-1", "CAF-2"]


def test_list_filters_by_ativo(catalogue):
    assert [p.sku for p in selectors.produto_list(ativo=False)] == ["CAF-2"]
    assert len(selectors.produto_list(ativo=True)) == 2


def test_q_matches_nome_or_sku_ignoring_case(catalogue):
    assert {p.sku for p in selectors.produto_list(q="caf")} == {"CAF-1", "CAF-2"}
    assert [p.sku for p in selectors.produto_list(q="VERDE")] == ["CHA-1"]
    assert [p.sku for p in selectors.produto_list(q="caf", ativo=True)] == ["CAF-1"]


def test_get_returns_the_product_or_404(catalogue):
    assert selectors.produto_get(produto_id=catalogue[1].pk).sku == "CHA-1"
    with pytest.raises(Http404):
        selectors.produto_get(produto_id=999)
