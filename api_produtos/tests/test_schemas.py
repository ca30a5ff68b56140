from decimal import Decimal

import pytest
from pydantic import ValidationError

from produto.schemas import ProdutoIn, ProdutoOut, ProdutoPatch

VALID = {"sku": "A", "nome": "B", "preco": "1.50"}


def test_defaults_of_optional_fields():
    body = ProdutoIn(**VALID)
    assert (body.descricao, body.estoque, body.ativo) == ("", 0, True)


@pytest.mark.parametrize("preco", [19.9, "19.9", "19.90", 0, "0"])
def test_price_accepts_a_json_number_or_string(preco):
    assert ProdutoIn(**{**VALID, "preco": preco}).preco == Decimal(str(preco))


@pytest.mark.parametrize(
    "field,value",
    [
        ("preco", "-0.01"),
        ("preco", "1.999"),
        ("preco", "NaN"),
        ("preco", "Infinity"),
        ("preco", "abc"),
        ("preco", "12345678901.00"),
        ("estoque", -1),
        ("estoque", 2**31),
        ("sku", ""),
        ("sku", "   "),
        ("sku", "x" * 65),
        ("nome", ""),
        ("nome", "x" * 201),
        ("nome", "nul\x00byte"),
        ("descricao", "lone \ud800 surrogate"),
        ("ativo", "maybe"),
    ],
)
def test_invalid_values_are_refused(field, value):
    with pytest.raises(ValidationError):
        ProdutoIn(**{**VALID, field: value})


@pytest.mark.parametrize("missing", ["sku", "nome", "preco"])
def test_required_fields(missing):
    body = dict(VALID)
    del body[missing]
    with pytest.raises(ValidationError):
        ProdutoIn(**body)


def test_sku_and_nome_are_stripped():
    body = ProdutoIn(**{**VALID, "sku": "  A-1 ", "nome": " Nome "})
    assert (body.sku, body.nome) == ("A-1", "Nome")


def test_patch_keeps_only_what_was_sent_and_refuses_null():
    assert ProdutoPatch(estoque=5).model_dump(exclude_unset=True) == {"estoque": 5}
    assert ProdutoPatch().model_dump(exclude_unset=True) == {}
    for field in ("sku", "nome", "preco", "estoque", "ativo", "descricao"):
        with pytest.raises(ValidationError):
            ProdutoPatch(**{field: None})


def test_price_is_serialized_as_a_two_place_string():
    out = ProdutoOut(
        id=1,
        sku="A",
        nome="B",
        descricao="",
        preco=Decimal("19.9"),
        estoque=0,
        ativo=True,
        criado_em="2026-01-01T00:00:00Z",
        atualizado_em="2026-01-01T00:00:00Z",
    )
    assert out.model_dump(mode="json")["preco"] == "19.90"
    assert out.model_dump()["preco"] == "19.90"
