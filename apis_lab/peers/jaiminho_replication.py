"""django-jaiminho 2.2 replicating `Produto` into `ProdutoMirror` (issue 23), used the way its
README says: a function decorated with `@save_to_outbox` is called in the transaction of each
change, jaiminho stores the call (dill-pickled, in its own table `jaiminho_event` of the
master's database) and its relay command (`events_relay --run-in-loop`) replays it. jaiminho is
broker-agnostic: the broker client is ours — `publish_change`, pika with publisher confirms onto
RabbitMQ — and so is the consumer (`consume`: plain pika, manual ack after the write), since the
library has none.

The master side runs under `apis_lab.peers.jaiminho_settings` (api_produtos' settings plus
jaiminho and `JaiminhoLabConfig`, which puts jaiminho's handlers in place of this project's
outbox signals); the consumer under `api_feed.settings`:

    python -m apis_lab.peers.jaiminho_replication consume

Nothing here is imported by the services; only the lab's processes load it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from decimal import Decimal

import pika
from django.apps import AppConfig
from django.core.serializers.json import DjangoJSONEncoder
from jaiminho.send import save_to_outbox

logger = logging.getLogger("apis_lab.jaiminho")

#: jaiminho's settings here, as its README recommends when order matters: `keep-order` (every
#: call stored in the transaction and relayed by `events_relay` in the order stored; a failure
#: stops the relay at that event and the next loop retries it — its retry), deleted once sent,
#: calls signed and checked (its defaults, spelled out).
JAIMINHO_CONFIG = {
    "PUBLISH_STRATEGY": "keep-order",
    "DELETE_AFTER_SEND": True,
    "PERSIST_ALL_EVENTS": False,  # only read by publish-on-commit: keep-order stores them all
    "SIGN_EVENTS": True,
    "VERIFY_EVENTS_SIGNATURE": True,
}
#: `events_relay` as the README runs it for keep-order: in a loop, 0.1 s between passes.
RELAY_COMMAND = ["events_relay", "--run-in-loop", "--loop-interval", "0.1"]
#: The routing key of these messages on the lab's exchange (not django-cqrs's `produto`, so
#: that the project's queue bound there gets none of them).
ROUTING_KEY = "jaiminho.produto"
#: Unacknowledged messages the consumer holds at most.
PREFETCH = 100
SAVE, DELETE = "SAVE", "DELETE"
#: What the consumer writes into ProdutoMirror from a SAVE.
MIRROR_FIELDS = (
    "sku", "nome", "descricao", "preco", "estoque", "ativo", "criado_em", "atualizado_em",
    "cqrs_revision", "cqrs_updated",
)  # fmt: skip


def queue_name(base: str) -> str:
    """The consumer's queue: the replica's queue name, suffixed (its own, plain durable)."""
    return f"{base}.jaiminho"


# --- the message ------------------------------------------------------------------------


def save_message(pk: int, data: dict) -> dict:
    """A save of product `pk`: its fields as django-cqrs serializes them (`to_cqrs_dict`)."""
    return {"signal": SAVE, "id": int(pk), "data": data}


def delete_message(pk: int, revision: int) -> dict:
    return {"signal": DELETE, "id": int(pk), "data": {"id": int(pk), "cqrs_revision": revision}}


def encode(message: dict) -> bytes:
    return json.dumps(message, cls=DjangoJSONEncoder, separators=(",", ":")).encode()


def decode(body: bytes) -> dict:
    """The message in `body`; ValueError when it is not one of ours (JSON only: nothing from
    the network is unpickled)."""
    message = json.loads(body)
    if not isinstance(message, dict) or message.get("signal") not in (SAVE, DELETE):
        raise ValueError("not a jaiminho lab message")
    if not isinstance(message.get("id"), int) or not isinstance(message.get("data"), dict):
        raise ValueError("a message without id or data")
    if message["signal"] == SAVE and not set(MIRROR_FIELDS) <= message["data"].keys():
        raise ValueError("a save without every field of the mirror")
    return message


def mirror_fields(data: dict) -> dict:
    """ProdutoMirror's columns from a save's data."""
    fields = {name: data[name] for name in MIRROR_FIELDS}
    fields["preco"] = Decimal(str(fields["preco"]))
    return fields


# --- the broker client: what jaiminho stores a call to ----------------------------------


def connection_parameters(url: str) -> list[pika.URLParameters]:
    """One set per node of RABBITMQ_URL (comma-separated), tried in order. A few seconds of
    heartbeat so that a dead link is noticed, a bound on the broker blocking a publisher (disk
    alarm) and on connecting: what a careful pika user sets."""
    parameters = []
    for part in (p.strip() for p in url.split(",") if p.strip()):
        params = pika.URLParameters(part)
        params.heartbeat = 5
        params.blocked_connection_timeout = 10
        params.socket_timeout = 3
        params.stack_timeout = 6
        params.connection_attempts = 1
        parameters.append(params)
    return parameters


class Publisher:
    """One connection and confirmed channel, kept across calls, dropped on any error (the next
    call connects again). `publish` returns once the broker confirmed the message routed to a
    queue (mandatory): otherwise it raises, and jaiminho keeps the call to retry it."""

    def __init__(self, url: str, exchange: str) -> None:
        self.url, self.exchange = url, exchange
        self.connection: pika.BlockingConnection | None = None
        self.channel = None

    def _connect(self) -> None:
        self.connection = pika.BlockingConnection(connection_parameters(self.url))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()

    def publish(self, body: bytes, message_id: str) -> None:
        try:
            if self.connection is None or self.connection.is_closed:
                self._connect()
            self.channel.basic_publish(
                self.exchange, ROUTING_KEY, body,
                pika.BasicProperties(
                    delivery_mode=2, content_type="application/json", message_id=message_id
                ),
                mandatory=True,
            )  # fmt: skip
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(Exception):
                self.connection.close()
        self.connection = self.channel = None


_publisher: Publisher | None = None


def _the_publisher() -> Publisher:
    global _publisher
    if _publisher is None:
        from django.conf import settings

        _publisher = Publisher(settings.CQRS["url"], settings.CQRS["exchange"])
    return _publisher


@save_to_outbox
def publish_change(message: dict) -> None:
    """Called in the change's transaction: jaiminho stores the call. Run by `events_relay`:
    one confirmed publish."""
    _the_publisher().publish(encode(message), f"{message['signal']}-{message['id']}")


# --- the master: jaiminho's decorated call instead of this project's outbox ------------------


def _on_save(sender, instance, using=None, update_fields=None, **kwargs) -> None:
    if update_fields and "cqrs_revision" not in update_fields:
        return  # as django-cqrs: a save that does not bump the revision is no change
    publish_change(save_message(instance.pk, instance.to_cqrs_dict(using)))
    # django-cqrs bumps the revision once per transaction; each save is one call here.
    instance.reset_cqrs_saves_count()


def _on_bulk(sender, instances, using=None, **kwargs) -> None:
    for instance in instances:
        publish_change(save_message(instance.pk, instance.to_cqrs_dict(using)))


def _on_delete(sender, instance, using=None, **kwargs) -> None:
    publish_change(delete_message(instance.pk, instance.cqrs_revision + 1))


class JaiminhoLabConfig(AppConfig):
    """Listed after `django_tools.outbox` (so that its `ready` ran first): takes this project's
    outbox handlers and django-cqrs's own (publish on commit) off every master model, and
    connects the calls to `publish_change` instead, in the transaction of the change."""

    name = "apis_lab.peers.jaiminho_replication"
    label = "jaiminho_lab"
    verbose_name = "jaiminho (lab)"

    def ready(self) -> None:
        from dj_cqrs.registries import MasterRegistry
        from dj_cqrs.signals import MasterSignals, post_bulk_create, post_update
        from django.db.models import signals

        from django_tools.outbox.signals import OutboxSignals

        for model in MasterRegistry.models.values():
            for handlers in (OutboxSignals, MasterSignals):
                signals.post_save.disconnect(handlers.post_save, sender=model)
                signals.post_delete.disconnect(handlers.post_delete, sender=model)
                post_bulk_create.disconnect(handlers.post_bulk_create, sender=model)
                post_update.disconnect(handlers.post_bulk_update, sender=model)
            signals.post_save.connect(_on_save, sender=model, weak=False)
            signals.post_delete.connect(_on_delete, sender=model, weak=False)
            post_bulk_create.connect(_on_bulk, sender=model, weak=False)
            post_update.connect(_on_bulk, sender=model, weak=False)


# --- the replica: a minimal pika consumer ---------------------------------------------------


def declare(channel, exchange: str, queue: str, queue_type: str) -> None:
    """The exchange as django-cqrs declares it, the consumer's durable queue bound to it."""
    channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    channel.queue_declare(queue, durable=True, arguments={"x-queue-type": queue_type})
    channel.queue_bind(queue, exchange, routing_key=ROUTING_KEY)


def apply(message: dict) -> None:
    """The change into ProdutoMirror, as it comes: jaiminho's keep-order relays in the order
    the master stored the calls, so the last one applied is the newest."""
    from feed.models import ProdutoMirror

    if message["signal"] == DELETE:
        ProdutoMirror.objects.filter(pk=message["id"]).delete()
    else:
        ProdutoMirror.objects.update_or_create(
            id=message["id"], defaults=mirror_fields(message["data"])
        )


def _on_message(channel, method, properties, body) -> None:
    try:
        message = decode(body)
    except ValueError:
        logger.warning("jaiminho consumer: dropped a message that is not a change")
        channel.basic_reject(method.delivery_tag, requeue=False)
        return
    apply(message)  # an error here closes the connection: the broker delivers it again
    channel.basic_ack(method.delivery_tag)


def consume() -> None:
    """Until stopped: connect, declare, consume; on any error (broker, link, database), drop
    the connection — its unacknowledged messages go back to the queue — and start again."""
    import django

    django.setup()
    from django import db
    from django.conf import settings

    url, exchange = settings.CQRS["url"], settings.CQRS["exchange"]
    queue = queue_name(settings.CQRS["queue"])
    queue_type = settings.CQRS_QUEUE_TYPE or "quorum"
    while True:
        connection = None
        try:
            connection = pika.BlockingConnection(connection_parameters(url))
            channel = connection.channel()
            declare(channel, exchange, queue, queue_type)
            channel.basic_qos(prefetch_count=PREFETCH)
            channel.basic_consume(queue, _on_message)
            logger.warning("jaiminho consumer: consuming %s", queue)
            channel.start_consuming()
        except KeyboardInterrupt:
            return
        except Exception as exc:
            logger.warning("jaiminho consumer: %r; connecting again in 1 s", exc)
            db.close_old_connections()
            db.connection.close()
        finally:
            if connection is not None:
                with contextlib.suppress(Exception):
                    connection.close()
        time.sleep(1.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m apis_lab.peers.jaiminho_replication")
    parser.add_argument("command", choices=["consume"])
    parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        consume()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
