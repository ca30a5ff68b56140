"""A PostgreSQL outage (nothing answers on the database's port) answers 503 JSON with
Retry-After on every write and read of the API, never 500; the service serves again as soon as
the database is back."""

import pytest

from django_tools.testing import database_unreachable

DETAIL = {"detail": "Database unavailable; try again shortly."}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/produtos/", "full"),
        ("put", "/api/produtos/{id}", "full"),
        ("patch", "/api/produtos/{id}", {"estoque": 3}),
        ("delete", "/api/produtos/{id}", None),
        ("get", "/api/produtos/", None),
        ("get", "/api/produtos/{id}", None),
    ],
)
def test_every_endpoint_answers_503_while_the_database_is_down(
    api, produto_body, method, path, body
):
    created = api.post("/api/produtos/", produto_body())
    assert created.status_code == 201
    path = path.format(id=created.json()["id"])
    call = getattr(api, method)
    if body == "full":
        body = produto_body(sku="CAF-002")
    args = (path,) if body is None else (path, body)
    with database_unreachable():
        response = call(*args)
    assert response.status_code == 503, response.content
    assert response.json() == DETAIL
    assert response["Retry-After"] == "5"
    assert api.get(f"/api/produtos/{created.json()['id']}").status_code == 200  # back
