import json
from typing import Any

import pytest
from django.test import Client

API_KEY = "test-key"


class JsonClient:
    """The Django test client speaking JSON to /api/produtos/, with the write key."""

    def __init__(self, client: Client, key: str | None = API_KEY) -> None:
        self.client = client
        self.key = key

    def _headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key} if self.key is not None else {}

    def get(self, path: str, **params: Any):
        return self.client.get(path, params, headers=self._headers())

    def post(self, path: str, body: Any, raw: bool = False):
        data = body if raw else json.dumps(body)
        return self.client.post(
            path, data, content_type="application/json", headers=self._headers()
        )

    def put(self, path: str, body: Any):
        return self.client.put(
            path, json.dumps(body), content_type="application/json", headers=self._headers()
        )

    def patch(self, path: str, body: Any):
        return self.client.patch(
            path, json.dumps(body), content_type="application/json", headers=self._headers()
        )

    def delete(self, path: str):
        return self.client.delete(path, headers=self._headers())


@pytest.fixture
def api_key(settings) -> str:
    settings.PRODUTOS_API_KEY = API_KEY
    return API_KEY


@pytest.fixture
def api(client: Client, api_key: str, db) -> JsonClient:
    return JsonClient(client)


@pytest.fixture
def anonymous(client: Client, api_key: str, db) -> JsonClient:
    return JsonClient(client, key=None)


def _produto_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "sku": "CAF-001",
        "nome": "Café torrado 500g",
        "descricao": "Grãos arábica",
        "preco": "19.90",
        "estoque": 10,
        "ativo": True,
    }
    body.update(overrides)
    return body


@pytest.fixture
def produto_body():
    """Factory of a valid Produto body, with overrides."""
    return _produto_body


@pytest.fixture
def json_client(client: Client, db):
    """Factory of a JSON client sending the given key (None: no header)."""
    return lambda key: JsonClient(client, key=key)
