"""The master's events on the real broker, exactly as a stock django-cqrs replica sees them."""

from decimal import Decimal

import pytest
from django.db import transaction

from produto import services

pytestmark = pytest.mark.django_db(transaction=True)

PAYLOAD_KEYS = {
    "signal_type",
    "cqrs_id",
    "instance_data",
    "previous_data",
    "instance_pk",
    "correlation_id",
    "retries",
    "expires",
    "meta",
}


@pytest.fixture
def replica_queue(listening_queue):
    return listening_queue.bind("produto")


def test_create_update_delete_are_published_in_stock_format(replica_queue):
    produto = services.produto_create(sku="P-1", nome="Pão", preco=Decimal("7.5"), estoque=2)

    properties, body = replica_queue.get()
    assert set(body) == PAYLOAD_KEYS
    assert properties.delivery_mode == 2  # persistent
    assert (body["signal_type"], body["cqrs_id"], body["instance_pk"]) == (
        "SAVE",
        "produto",
        produto.pk,
    )
    data = body["instance_data"]
    assert (data["id"], data["sku"], data["nome"], data["preco"], data["estoque"]) == (
        produto.pk,
        "P-1",
        "Pão",
        "7.50",
        2,
    )
    assert data["cqrs_revision"] == 0

    services.produto_update(produto_id=produto.pk, data={"preco": Decimal("8")})
    _, body = replica_queue.get()
    assert body["signal_type"] == "SAVE"
    assert (body["instance_data"]["preco"], body["instance_data"]["cqrs_revision"]) == ("8.00", 1)

    services.produto_delete(produto_id=produto.pk)
    _, body = replica_queue.get()
    assert body["signal_type"] == "DELETE"
    assert body["instance_data"]["id"] == produto.pk
    assert body["instance_data"]["cqrs_revision"] == 2


def test_a_rolled_back_write_publishes_nothing(replica_queue):
    with pytest.raises(RuntimeError), transaction.atomic():
        services.produto_create(sku="GONE", nome="x", preco=Decimal("1"))
        raise RuntimeError("abort")
    services.produto_create(sku="KEPT", nome="y", preco=Decimal("1"))
    _, body = replica_queue.get()
    assert body["instance_data"]["sku"] == "KEPT"
