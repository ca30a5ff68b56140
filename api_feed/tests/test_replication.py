"""Events from a stock django-cqrs master, through the real broker, applied by the replica."""

import uuid

import pytest
from dj_cqrs.constants import SignalType
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.delay import DelayQueue
from dj_cqrs.transport.rabbit_mq import RabbitMQTransport

from django_tools.testing import amqp_channel
from feed.models import ProdutoMirror

pytestmark = pytest.mark.django_db(transaction=True)


class Consumer:
    """The stock consumer's own connection, bindings and message handling, driven step by step
    so that the test decides when it stops."""

    def __init__(self, settings) -> None:
        self.queue = f"test_feed_{uuid.uuid4().hex[:8]}"
        settings.CQRS["queue"] = self.queue
        args = RabbitMQTransport._get_common_settings() + RabbitMQTransport._get_consumer_settings()
        self.connection, self.channel, self.messages = RabbitMQTransport._get_consumer_rmq_objects(
            *args
        )
        self.delay_queue = DelayQueue(max_size=10)

    def drain(self) -> int:
        """Handle messages until the queue stays empty for a second; returns how many."""
        handled = 0
        for method, properties, body in self.messages:
            if method is None:
                return handled
            RabbitMQTransport._consume_message(
                self.channel, method, properties, body, self.delay_queue
            )
            handled += 1
        return handled

    def close(self) -> None:
        for name in (self.queue, f"dead_letter_{self.queue}"):
            self.channel.queue_delete(name)
        self.connection.close()


@pytest.fixture
def consumer(settings, cqrs_exchange):
    consumer = Consumer(settings)
    yield consumer
    consumer.close()


def publish(signal_type: str, data: dict) -> None:
    """What a stock master does on commit."""
    RabbitMQTransport.produce(TransportPayload(signal_type, "produto", data, data["id"]))


def test_save_update_delete_reach_the_replica(consumer, instance_data):
    publish(SignalType.SAVE, instance_data(7, 0, preco="19.90"))
    assert consumer.drain() == 1
    row = ProdutoMirror.objects.get(pk=7)
    assert (str(row.preco), row.cqrs_revision, row.sku) == ("19.90", 0, "SKU-7")

    publish(SignalType.SAVE, instance_data(7, 1, preco=21.5, nome="Novo"))
    consumer.drain()
    row.refresh_from_db()
    assert (str(row.preco), row.nome, row.cqrs_revision) == ("21.50", "Novo", 1)

    publish(
        SignalType.DELETE,
        {"id": 7, "cqrs_revision": 2, "cqrs_updated": "2026-01-01 00:00:00+00:00"},
    )
    consumer.drain()
    assert not ProdutoMirror.objects.filter(pk=7).exists()


def test_duplicates_and_older_revisions_are_ignored(consumer, instance_data):
    publish(SignalType.SAVE, instance_data(8, 2, nome="rev2"))
    publish(SignalType.SAVE, instance_data(8, 2, nome="rev2 again"))
    publish(SignalType.SAVE, instance_data(8, 1, nome="rev1 late"))
    assert consumer.drain() == 3
    row = ProdutoMirror.objects.get(pk=8)
    assert (row.nome, row.cqrs_revision) == ("rev2", 2)


def test_messages_are_acknowledged(consumer, rabbitmq_url, instance_data):
    publish(SignalType.SAVE, instance_data(9, 0))
    consumer.drain()
    with amqp_channel(rabbitmq_url) as channel:
        assert channel.queue_declare(consumer.queue, passive=True).method.message_count == 0
