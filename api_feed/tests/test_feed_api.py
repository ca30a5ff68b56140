"""The read-only feed through Django's whole HTTP stack."""

import pytest

pytestmark = pytest.mark.django_db

URL = "/api/feed/"


@pytest.fixture
def catalogue(mirror):
    mirror(1, nome="Café", preco="19.90", ativo=True)
    mirror(2, nome="Chá verde", preco="5.00", ativo=True, revision=3)
    mirror(3, nome="Caneca", preco="35.50", ativo=False, sku="MUG-1")


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [item["id"] for item in response.json()["items"]]


def test_item_has_the_produto_fields_and_revisao(client, catalogue):
    item = client.get(f"{URL}2").json()
    assert set(item) == {
        "id",
        "sku",
        "nome",
        "descricao",
        "preco",
        "estoque",
        "ativo",
        "criado_em",
        "atualizado_em",
        "revisao",
    }
    assert (item["preco"], item["revisao"], item["nome"]) == ("5.00", 3, "Chá verde")


def test_default_order_is_most_recently_updated_first(client, catalogue):
    response = client.get(URL)
    assert ids(response) == [3, 2, 1]
    assert response.json()["count"] == 3


@pytest.mark.parametrize(
    "ordering,expected",
    [
        ("nome", [1, 3, 2]),
        ("-nome", [2, 3, 1]),
        ("preco", [2, 1, 3]),
        ("-preco", [3, 1, 2]),
        ("atualizado_em", [1, 2, 3]),
        ("-atualizado_em", [3, 2, 1]),
    ],
)
def test_ordering(client, catalogue, ordering, expected):
    assert ids(client.get(URL, {"ordering": ordering})) == expected


def test_filters(client, catalogue):
    assert ids(client.get(URL, {"ativo": "false"})) == [3]
    assert ids(client.get(URL, {"q": "CA", "ordering": "nome"})) == [1, 3]
    assert ids(client.get(URL, {"q": "mug"})) == [3]
    assert ids(client.get(URL, {"preco_min": "10", "ordering": "preco"})) == [1, 3]
    assert ids(client.get(URL, {"preco_max": "19.90", "ordering": "preco"})) == [2, 1]
    assert ids(client.get(URL, {"preco_min": 5, "preco_max": 6})) == [2]


def test_pagination(client, catalogue):
    page = client.get(URL, {"limit": 2, "offset": 1, "ordering": "preco"}).json()
    assert page["count"] == 3
    assert [item["id"] for item in page["items"]] == [1, 3]


def test_missing_item_is_404_json(client, catalogue):
    response = client.get(f"{URL}99")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found"}


@pytest.mark.parametrize(
    "params",
    [
        {"ordering": "sku"},
        {"ordering": "--nome"},
        {"preco_min": "abc"},
        {"preco_max": "NaN"},
        {"limit": 0},
        {"offset": -5},
        {"ativo": "x"},
        {"q": "\x00"},
        {"offset": 10**20},
    ],
)
def test_bad_query_is_422(client, catalogue, params):
    response = client.get(URL, params)
    assert response.status_code == 422
    assert "detail" in response.json()


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_the_feed_is_read_only(client, catalogue, method):
    response = getattr(client, method)(f"{URL}1", content_type="application/json")
    assert response.status_code == 405


def test_openapi(client):
    schema = client.get("/api/openapi.json").json()
    assert set(schema["paths"]) == {
        "/api/feed/",
        "/api/feed/{produto_id}",
        "/api/replication/status",
        "/api/replication/rows",
        "/api/replication/tombstones",
    }


def test_a_negative_zero_price_is_served_as_zero(client, instance_data):
    """A stock master may send "-0.00" (it passes preco >= 0); both databases store it as 0, and
    a -0 that reaches the serializer any other way is "0.00" too."""
    from decimal import Decimal

    from dj_cqrs.constants import SignalType
    from django.db import transaction

    from django_tools.replica import apply, messages
    from feed.models import ProdutoMirror
    from feed.schemas import FeedItemOut

    data = instance_data(3, preco="-0.00")
    event = messages.Event("produto", SignalType.SAVE, 3, 0, data)
    with transaction.atomic():
        apply.apply_changes([apply.prepare(event)])
    assert client.get("/api/feed/3").json()["preco"] == "0.00"
    row = ProdutoMirror.objects.get(pk=3)
    row.preco = Decimal("-0.00")
    assert FeedItemOut.model_validate(row).model_dump(mode="json")["preco"] == "0.00"


def test_every_text_the_api_accepts_has_a_maximum_length(client):
    from django_tools.testing import unbounded_inputs

    assert unbounded_inputs(client.get("/api/openapi.json").json()) == []
