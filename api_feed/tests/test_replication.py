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


@pytest.mark.django_db(transaction=True)
def test_over_long_fields_from_a_stock_master_are_dead_lettered_as_permanent(
    consumers, instance_data, topology, rabbitmq_url
):
    """A stock django-cqrs master checks no length: a descricao over the master's 10,000
    characters, and a 2.5 MB one (a body over CQRS_MAX_MESSAGE_BYTES, refused unread), go to the
    dead-letter queue as `permanent` at once — not retried, not applied, no MemoryError — and
    the changes around them are applied."""
    from django_tools.connectivity import amqp_channel
    from django_tools.replica import dead_letters
    from django_tools.replica.failures import PERMANENT

    consumers.start()

    def produce(data):
        RabbitMQTransport.produce(TransportPayload(SignalType.SAVE, "produto", data, data["id"]))

    produce(instance_data(30, 0))
    produce(instance_data(31, 0, descricao="x" * 10_001))
    produce(instance_data(32, 0, descricao="x" * 2_500_000))
    produce(instance_data(33, 0, descricao="x" * 10_000))  # the longest there is: applied
    wait_until(
        lambda: set(ProdutoMirror.objects.values_list("pk", flat=True)) == {30, 33},
        what="the changes around the over-long ones",
    )

    reports = []

    def two_letters() -> bool:
        with amqp_channel(rabbitmq_url) as channel:
            reports[:] = [letter.report for letter in dead_letters.read(channel, topology)]
        return len(reports) == 2

    wait_until(two_letters, what="two dead letters")
    assert [r.dead_reason for r in reports] == [PERMANENT, PERMANENT]
    assert all(r.retries == 0 for r in reports)
    by_class = {r.error_class.rsplit(".", 1)[1]: r.error for r in reports}
    assert "descricao" in by_class["InvalidData"] and "10000" in by_class["InvalidData"]
    assert "larger than CQRS_MAX_MESSAGE_BYTES" in by_class["InvalidMessage"]
    assert consumers.stats("retried") == 0
