"""CRUD over HTTP on the master, seen on the feed: the real servers, broker and consumer."""

import time

import pytest
from e2e_lab import wait_until

pytestmark = pytest.mark.e2e


def feed_item(feed, produto_id):
    response = feed.get(f"/api/feed/{produto_id}")
    return response.json() if response.status_code == 200 else None


def test_create_update_delete_reach_the_feed(produtos, feed):
    started = time.monotonic()
    created = produtos.post(
        "/api/produtos/", json={"sku": "E2E-1", "nome": "Café", "preco": 19.9, "estoque": 3}
    )
    assert created.status_code == 201, created.text
    produto = created.json()
    item = wait_until(lambda: feed_item(feed, produto["id"]), 10, what="the created product")
    create_delay = time.monotonic() - started
    assert {k: item[k] for k in produto} == produto
    assert item["revisao"] == 0

    started = time.monotonic()
    patched = produtos.patch(f"/api/produtos/{produto['id']}", json={"preco": "21.50"})
    assert patched.status_code == 200
    item = wait_until(
        lambda: (i := feed_item(feed, produto["id"])) and i["revisao"] == 1 and i,
        10,
        what="the update",
    )
    assert item["preco"] == "21.50"
    assert item["atualizado_em"] == patched.json()["atualizado_em"]

    assert produtos.delete(f"/api/produtos/{produto['id']}").status_code == 204
    wait_until(
        lambda: feed.get(f"/api/feed/{produto['id']}").status_code == 404, 10, what="the delete"
    )
    update_delete_delay = time.monotonic() - started
    print(
        f"\nreplication delay: create {create_delay * 1000:.0f} ms, "
        f"update+delete {update_delete_delay * 1000:.0f} ms"
    )


def test_a_burst_of_100_creates_all_reach_the_feed(produtos, feed):
    started = time.monotonic()
    ids = []
    for n in range(100):
        response = produtos.post(
            "/api/produtos/", json={"sku": f"BURST-{n}", "nome": f"Item {n}", "preco": n}
        )
        assert response.status_code == 201
        ids.append(response.json()["id"])
    written = time.monotonic()

    def all_there():
        listed = feed.get("/api/feed/", params={"q": "BURST-", "limit": 1000}).json()
        return listed["count"] == 100 and listed

    listed = wait_until(all_there, 30, interval=0.05, what="100 products on the feed")
    done = time.monotonic()
    assert sorted(item["id"] for item in listed["items"]) == sorted(ids)
    print(
        f"\nburst of 100: writes {written - started:.2f}s, "
        f"feed complete {(done - written) * 1000:.0f} ms after the last write"
    )


def test_writes_need_the_key_and_bad_input_is_never_500(lab, produtos):
    import httpx

    with httpx.Client(base_url=lab.produtos_url, timeout=10) as anonymous:
        assert anonymous.post("/api/produtos/", json={"sku": "X"}).status_code == 401
    assert produtos.post("/api/produtos/", json={"sku": "X"}).status_code == 422
    assert produtos.post("/api/produtos/", content=b"{oops").status_code == 422
    body = {"sku": "DUP", "nome": "a", "preco": 1}
    assert produtos.post("/api/produtos/", json=body).status_code == 201
    assert produtos.post("/api/produtos/", json=body).status_code == 409


def test_both_services_are_healthy_and_document_their_api(lab, produtos, feed):
    for client in (produtos, feed):
        assert client.get("/health").json()["status"] == "ok"
        assert client.get("/api/docs").status_code == 200
        assert client.get("/api/openapi.json").json()["openapi"].startswith("3.")
    # The docs' assets are served by the production server too.
    assert feed.get("/static/ninja/swagger-ui-bundle.js").status_code == 200
