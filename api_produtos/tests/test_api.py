"""The Produto API through Django's whole HTTP stack (URLs, middleware, ninja, handlers)."""

import pytest

URL = "/api/produtos/"


@pytest.fixture
def created(api, produto_body):
    def create(**overrides) -> dict:
        response = api.post(URL, produto_body(**overrides))
        assert response.status_code == 201, response.content
        return response.json()

    return create


def test_create_returns_201_with_the_product(api, created):
    body = created(preco=19.9)
    assert body["id"] >= 1
    assert body["preco"] == "19.90"
    assert body["sku"] == "CAF-001" and body["estoque"] == 10 and body["ativo"] is True
    assert body["criado_em"] and body["atualizado_em"]
    assert set(body) == {
        "id",
        "sku",
        "nome",
        "descricao",
        "preco",
        "estoque",
        "ativo",
        "criado_em",
        "atualizado_em",
    }


def test_get_list_and_detail(api, created):
    first = created(sku="A")
    created(sku="B", ativo=False, nome="Chá")
    listed = api.get(URL).json()
    assert listed["count"] == 2 and [p["sku"] for p in listed["items"]] == ["A", "B"]
    assert api.get(URL, ativo="false").json()["count"] == 1
    assert api.get(URL, q="chá").json()["items"][0]["sku"] == "B"
    page = api.get(URL, limit=1, offset=1).json()
    assert page["count"] == 2 and [p["sku"] for p in page["items"]] == ["B"]
    assert api.get(f"{URL}{first['id']}").json() == first


def test_reads_need_no_key(anonymous, api, created):
    item = created()
    assert anonymous.get(URL).status_code == 200
    assert anonymous.get(f"{URL}{item['id']}").status_code == 200


def test_put_replaces_every_writable_field(api, created):
    item = created(descricao="antes", estoque=5)
    response = api.put(f"{URL}{item['id']}", {"sku": "NEW", "nome": "Novo", "preco": "1"})
    assert response.status_code == 200
    body = response.json()
    assert (body["sku"], body["nome"], body["preco"]) == ("NEW", "Novo", "1.00")
    assert (body["descricao"], body["estoque"], body["ativo"]) == ("", 0, True)


def test_patch_changes_only_what_is_sent(api, created):
    item = created()
    response = api.patch(f"{URL}{item['id']}", {"preco": "21.5", "ativo": False})
    assert response.status_code == 200
    body = response.json()
    assert (body["preco"], body["ativo"], body["nome"]) == ("21.50", False, item["nome"])
    assert body["atualizado_em"] >= item["atualizado_em"]


def test_delete_then_404(api, created):
    item = created()
    response = api.delete(f"{URL}{item['id']}")
    assert response.status_code == 204 and response.content == b""
    assert api.get(f"{URL}{item['id']}").status_code == 404
    assert api.delete(f"{URL}{item['id']}").status_code == 404


@pytest.mark.parametrize("key", [None, "wrong", ""])
def test_every_write_needs_the_key(anonymous, api, key, created, produto_body):
    anonymous.key = key
    item = created()
    path = f"{URL}{item['id']}"
    for response in (
        anonymous.post(URL, produto_body(sku="X")),
        anonymous.put(path, produto_body()),
        anonymous.patch(path, {"nome": "x"}),
        anonymous.delete(path),
    ):
        assert response.status_code == 401
        assert response.json() == {"detail": "Unauthorized"}
    assert api.get(URL).json()["count"] == 1


def test_auth_comes_before_validation(anonymous):
    assert anonymous.post(URL, {"bad": "body"}).status_code == 401


def test_without_a_configured_key_writes_are_open(json_client, settings, produto_body):
    settings.PRODUTOS_API_KEY = None
    assert json_client(None).post(URL, produto_body()).status_code == 201


def test_duplicate_sku_is_409_on_create_put_and_patch(api, created, produto_body):
    created(sku="A")
    other = created(sku="B")
    for response in (
        api.post(URL, produto_body(sku="A")),
        api.put(f"{URL}{other['id']}", produto_body(sku="A")),
        api.patch(f"{URL}{other['id']}", {"sku": "A"}),
    ):
        assert response.status_code == 409
        assert "A" in response.json()["detail"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"preco": "-1"},
        {"preco": "1.234"},
        {"preco": "NaN"},
        {"preco": None},
        {"estoque": -1},
        {"estoque": "many"},
        {"estoque": 10**30},
        {"sku": ""},
        {"sku": "x" * 65},
        {"nome": "\x00"},
        {"ativo": "talvez"},
    ],
)
def test_invalid_fields_are_422_json(api, produto_body, overrides):
    response = api.post(URL, produto_body(**overrides))
    assert response.status_code == 422, response.content
    assert "detail" in response.json()


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"sku": "A", "nome": "B"},
        [],
        "just a string",
        123,
    ],
)
def test_invalid_bodies_are_422_json(api, body):
    response = api.post(URL, body)
    assert response.status_code == 422, response.content
    assert "detail" in response.json()


def test_unparseable_json_is_422(api):
    response = api.post(URL, "{not json", raw=True)
    assert response.status_code == 422
    assert response.json()["detail"]


def test_patch_with_null_is_422(api, created):
    item = created()
    assert api.patch(f"{URL}{item['id']}", {"nome": None}).status_code == 422


@pytest.mark.parametrize("path", ["0", "-1", "abc", str(2**63), "1.5"])
def test_bad_ids_never_answer_500(api, path):
    for response in (api.get(f"{URL}{path}"), api.patch(f"{URL}{path}", {"nome": "x"})):
        assert response.status_code in (404, 422)
        assert "detail" in response.json()


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 10**6},
        {"offset": -1},
        {"offset": 10**20},
        {"ativo": "x"},
        {"q": "\x00"},
    ],
)
def test_bad_query_is_422(api, params):
    response = api.get(URL, **params)
    assert response.status_code == 422
    assert "detail" in response.json()


def test_unknown_paths_answer_json_404(api):
    response = api.get("/nothing/here")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found"}


def test_openapi_schema_and_docs(api):
    schema = api.get("/api/openapi.json").json()
    assert "/api/produtos/" in schema["paths"]
    assert "/api/produtos/{produto_id}" in schema["paths"]
    assert api.get("/api/docs").status_code == 200


@pytest.mark.parametrize("preco", ["-0", "-0.00", -0.0, "-0.0"])
def test_a_negative_zero_price_is_zero_everywhere(api, created, preco):
    """-0 passes `preco >= 0`: it was answered, and replicated, as "-0.00"."""
    from django_tools.outbox.models import OutboxEvent

    body = created(preco=preco)
    assert body["preco"] == "0.00"
    assert api.get(f"{URL}{body['id']}").json()["preco"] == "0.00"
    patched = api.patch(f"{URL}{body['id']}", {"preco": "1.00"})
    assert patched.json()["preco"] == "1.00"
    patched = api.patch(f"{URL}{body['id']}", {"preco": preco})
    assert patched.status_code == 200 and patched.json()["preco"] == "0.00"
    events = [e.body for e in OutboxEvent.objects.order_by("id")]
    assert len(events) == 3
    assert all('"preco":"-0' not in e for e in events)
    assert '"preco":"0.00"' in events[0] and '"preco":"0.00"' in events[2]


def test_a_negative_zero_already_in_memory_is_sent_and_served_as_zero(db):
    """Whatever path left a Decimal("-0.00") on an instance (a bulk write, a shell), its event and
    its serialization say "0.00"."""
    from decimal import Decimal

    from produto.models import Produto
    from produto.schemas import ProdutoOut

    produto = Produto(id=1, sku="Z", nome="Zero", preco=Decimal("-0.00"))
    assert produto.to_cqrs_dict()["preco"] == "0.00"
    produto.full_clean(validate_unique=False, validate_constraints=False)
    assert str(produto.preco) == "0.00"
    produto.preco = Decimal("-0.00")
    produto.criado_em = produto.atualizado_em = "2026-01-01T00:00:00Z"
    assert ProdutoOut.model_validate(produto).model_dump(mode="json")["preco"] == "0.00"


def test_every_text_the_api_accepts_has_a_maximum_length(api):
    from django_tools.testing import unbounded_inputs

    assert unbounded_inputs(api.get("/api/openapi.json").json()) == []


@pytest.mark.parametrize(("field", "longest"), [("sku", 64), ("nome", 200), ("descricao", 10_000)])
def test_each_text_field_takes_its_maximum_and_refuses_one_more(api, created, field, longest):
    body = created(**{field: "x" * longest})
    assert body[field] == "x" * longest
    too_long = {field: "x" * (longest + 1)}
    for method in (api.patch, api.put):
        payload = too_long if method == api.patch else {**body, "sku": "OTHER", **too_long}
        response = method(f"{URL}{body['id']}", payload)
        assert response.status_code == 422, response.content
        assert field in str(response.json()["detail"])
    response = api.post(URL, {**body, "sku": "NEW", **too_long})
    assert response.status_code == 422 and field in str(response.json()["detail"])


def test_the_model_refuses_a_longer_descricao_whoever_writes_it(db):
    """The services (and the admin) validate the model: the API's limit is the model's."""
    from django.core.exceptions import ValidationError

    from produto import services

    with pytest.raises(ValidationError) as refused:
        services.produto_create(sku="S", nome="N", preco="1.00", descricao="x" * 10_001)
    assert "descricao" in refused.value.message_dict
