"""Produto with django_tools.outbox: the one integration test of the service's model with the
library (the outbox, the relays and reconciliation are tested in django_tools/tests)."""

import orjson
import pytest

from django_tools.outbox.models import OutboxEvent
from django_tools.testing import STOCK_PAYLOAD_KEYS

pytestmark = pytest.mark.django_db


def test_a_write_answers_without_the_broker_and_leaves_its_stock_event(api, produto_body, settings):
    settings.CQRS = {**settings.CQRS, "url": "amqp://admin:admin@127.0.0.1:1/"}  # nobody there
    response = api.post("/api/produtos/", produto_body(sku="OFF", preco="19.9"))
    assert response.status_code == 201
    (event,) = OutboxEvent.objects.all()
    body = orjson.loads(event.body)
    assert set(body) == STOCK_PAYLOAD_KEYS
    assert (event.routing_key, event.revision, event.published_at) == ("produto", 0, None)
    assert (body["signal_type"], body["cqrs_id"], body["instance_pk"]) == (
        "SAVE",
        "produto",
        response.json()["id"],
    )
    assert (body["instance_data"]["sku"], body["instance_data"]["preco"]) == ("OFF", "19.90")
