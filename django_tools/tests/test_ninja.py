"""The shared error format and field types, on a small API built with build_api."""

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from ninja import Schema
from ninja.testing import TestClient

from django_tools.chassis.errors import ConflictError
from django_tools.chassis.ninja import Money, PathId, build_api, text


class Body(Schema):
    name: text(min_length=1, max_length=5, strip=True)
    price: Money


api = build_api(title="t", version="2", description="d", urls_namespace="t2")


@api.post("/echo")
def echo(request, body: Body):
    return body.model_dump()


@api.get("/item/{item_id}")
def item(request, item_id: PathId):
    return {"id": item_id}


@api.get("/conflict")
def conflict(request):
    raise ConflictError("already there")


@api.get("/invalid")
def invalid(request):
    raise ValidationError({"field": ["bad"]})


client = TestClient(api)


def test_valid_body_and_money_serialization():
    response = client.post("/echo", json={"name": " ab ", "price": 3.5})
    assert response.status_code == 200
    assert response.json() == {"name": "ab", "price": "3.50"}


@pytest.mark.parametrize(
    "body",
    [
        {"name": "", "price": 1},
        {"name": "toolong", "price": 1},
        {"name": "a\x00", "price": 1},
        {"name": "a", "price": -1},
        {"name": "a", "price": "1.001"},
        {"name": "a"},
    ],
)
def test_invalid_body_is_422_with_detail(body):
    response = client.post("/echo", json=body)
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], list)


def test_unparseable_body_is_422():
    response = client.post("/echo", data=b"{nope", content_type="application/json")
    assert response.status_code == 422
    assert "parse" in response.json()["detail"]


@pytest.mark.parametrize("item_id", ["0", str(2**63), "x"])
def test_path_ids_are_bounded(item_id):
    assert client.get(f"/item/{item_id}").status_code == 422


def test_domain_errors_map_to_status_codes():
    assert client.get("/conflict").status_code == 409
    assert client.get("/conflict").json() == {"detail": "already there"}
    response = client.get("/invalid")
    assert (response.status_code, response.json()) == (422, {"detail": {"field": ["bad"]}})


def test_money_keeps_two_places():
    assert Body(name="a", price=Decimal("1")).model_dump()["price"] == "1.00"


@api.get("/rows")
def rows(request):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"ok": True}


@pytest.mark.django_db
def test_a_database_that_cannot_be_reached_answers_503_json_not_500(caplog):
    """Connection refused by a real PostgreSQL client (nothing listens on the port): 503 with
    Retry-After and one log line without host, user or password; the same request works once
    the database is back."""
    from django_tools.testing import database_unreachable

    with database_unreachable() as port:
        response = client.get("/rows")
    assert response.status_code == 503
    assert response.json() == {"detail": "Database unavailable; try again shortly."}
    assert response["Retry-After"] == "5"
    (line,) = [r.getMessage() for r in caplog.records if "database unavailable" in r.getMessage()]
    assert line.startswith("database unavailable on GET /rows: OperationalError: ")
    assert "unreachable" not in response.content.decode() and str(port) not in str(response.json())
    assert client.get("/rows").status_code == 200


@api.get("/server-gone")
def server_gone(request):
    """The server ends this request's session halfway (as a PostgreSQL restart or an operator's
    pg_terminate_backend does), then the view goes on using the connection."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    import psycopg

    params = connection.get_connection_params()
    with psycopg.connect(**params, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"ok": True}


@pytest.mark.django_db(transaction=True)
def test_a_server_that_goes_away_mid_request_answers_503():
    from django.core.signals import request_finished
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("a server session ended by the server: PostgreSQL only")
    response = client.get("/server-gone")
    assert response.status_code == 503, response.content
    assert response.json() == {"detail": "Database unavailable; try again shortly."}
    # Django's request cycle (which ninja's TestClient skips) drops the broken connection at
    # the end of the request; the next request opens a new one.
    request_finished.send(sender=None)
    assert client.get("/rows").status_code == 200


@pytest.mark.parametrize("price", ["-0", "-0.00", -0.0, 0, "0"])
def test_a_negative_zero_price_is_zero(price):
    response = client.post("/echo", json={"name": "a", "price": price})
    assert response.status_code == 200
    assert response.json()["price"] == "0.00"
