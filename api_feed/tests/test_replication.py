"""ProdutoMirror with django_tools.replica: the one integration test of the service's model with
the library (the consumer itself is tested in django_tools/tests)."""

import pytest
from dj_cqrs.constants import SignalType
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.transport.rabbit_mq import RabbitMQTransport

from django_tools.testing import wait_until
from feed.models import ProdutoMirror


@pytest.mark.django_db(transaction=True)
def test_a_stock_django_cqrs_master_of_produto_is_followed(consumers, instance_data, topology):
    """Messages exactly as dj_cqrs.transport.RabbitMQTransport publishes them: no headers,
    decimals as JSON numbers, syncs on the replica's own routing key."""
    consumers.start()

    def produce(signal_type, data, queue=None):
        RabbitMQTransport.produce(
            TransportPayload(signal_type, "produto", data, data["id"], queue=queue)
        )

    produce(SignalType.SAVE, instance_data(20, 0, preco=19.9))
    produce(SignalType.SAVE, instance_data(21, 0))
    produce(SignalType.SAVE, instance_data(20, 1, preco=21.5, nome="updated"))
    produce(SignalType.DELETE, {"id": 21, "cqrs_revision": 1, "cqrs_updated": "2026-01-01"})
    produce(SignalType.SYNC, instance_data(22, 4, nome="synced"), queue=topology.queue)
    wait_until(
        lambda: set(ProdutoMirror.objects.values_list("pk", "cqrs_revision")) == {(20, 1), (22, 4)},
        what="the stock master's changes",
    )
    row = ProdutoMirror.objects.get(pk=20)
    assert (str(row.preco), row.nome) == ("21.50", "updated")
