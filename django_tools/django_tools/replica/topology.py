"""The replica's broker topology, declared in one place.

```
exchange cqrs ──"<cqrs_id>"───────────────────────┐
              ──"cqrs.<queue>.<cqrs_id>" (syncs)─►│ <queue>  ──► consumer
                                                   ▲
<queue>.retry.<delay>s  (x-message-ttl, dead-letters back to <queue>)
dead_letter_<queue>     (what could not be applied, with the reason in headers)
```

Retries wait in per-tier delay queues on the broker, not in a worker's memory: a restart, a crash
or a scale-down loses no scheduled retry, and a message comes back only when its delay expired.
`apis up` declares all of it (`manage.py cqrs_declare`) before the master accepts writes, so no
event is dropped by the exchange for lack of a bound queue while the consumer is starting.

Queue type (`CQRS_QUEUE_TYPE`): `quorum` (replicated on a cluster, dead-lettering at least once
from the retry tiers back to the queue) or `classic`. Unset, a deployment keeps the type its
queue already has, and a new one gets quorum queues where the broker supports what they need
here (RabbitMQ 3.10+: message TTL and at-least-once dead-lettering). Every queue of a replica has
the same type. Asking for a type other than the existing one is refused with the way out
(`manage.py cqrs_queues migrate --to <type>`): RabbitMQ cannot change a queue's type in place.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from dj_cqrs.registries import ReplicaRegistry
from django.conf import settings
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import ChannelClosedByBroker

from django_tools.replica.policy import RetryPolicy, format_seconds
from django_tools.wire import DEFAULT_EXCHANGE, routing_key

QUORUM, CLASSIC = "quorum", "classic"
QUEUE_TYPES = (QUORUM, CLASSIC)
#: The dead-letter queue's delivery limit when quorum: as good as none (RabbitMQ 4 otherwise
#: drops a quorum queue's message at its 20th delivery, and this queue has nowhere to
#: dead-letter to). The same on 3.x and 4.x, so an upgrade keeps the declaration equal (-1,
#: "unlimited" on 4.x, means "drop at the first return" on 3.x). Reading never counts a
#: delivery anyway (dead_letters: reading moves letters); this covers readers killed halfway.
DEAD_LETTER_DELIVERY_LIMIT = 2**31 - 1

logger = logging.getLogger("django_tools.replica")


class QueueTypeMismatch(Exception):
    """The replica's queue exists with another type than the one configured."""


@dataclass(frozen=True)
class Topology:
    exchange: str
    queue: str
    dead_letter_queue: str
    policy: RetryPolicy
    cqrs_ids: tuple[str, ...]
    #: quorum, classic, or None: the existing queue's type, else quorum where supported.
    queue_type: str | None = None

    @classmethod
    def named(
        cls,
        queue: str,
        policy: RetryPolicy,
        *,
        exchange: str = DEFAULT_EXCHANGE,
        dead_letter_queue: str | None = None,
        cqrs_ids: tuple[str, ...] = (),
        queue_type: str | None = None,
    ) -> Topology:
        """The topology of the replica whose queue is `queue`: every other name derives from
        it here, and only here."""
        if queue_type not in (None, *QUEUE_TYPES):
            raise ValueError(f"queue type {queue_type!r}: use quorum or classic")
        return cls(
            exchange=exchange,
            queue=queue,
            dead_letter_queue=dead_letter_queue or f"dead_letter_{queue}",
            policy=policy,
            cqrs_ids=cqrs_ids,
            queue_type=queue_type,
        )

    @classmethod
    def from_settings(cls, cqrs_ids: tuple[str, ...] | None = None) -> Topology:
        replica = settings.CQRS["replica"]
        return cls.named(
            settings.CQRS["queue"],
            RetryPolicy.from_settings(replica),
            exchange=settings.CQRS["exchange"],
            dead_letter_queue=replica.get("dead_letter_queue"),
            cqrs_ids=tuple(cqrs_ids or ReplicaRegistry.models),
            queue_type=replica.get("queue_type"),
        )

    def queues(self) -> list[str]:
        """Every queue of this replica: its own, the dead-letter queue, the retry tiers."""
        return [self.queue, self.dead_letter_queue, *map(self.retry_queue, self.policy.tiers())]

    def retry_queue(self, tier: float) -> str:
        return f"{self.queue}.retry.{format_seconds(tier)}"

    def retry_queue_for(self, retry: int) -> str:
        return self.retry_queue(self.policy.tier(retry))

    def bindings(self) -> list[tuple[str, str]]:
        """(queue, routing key) pairs on the exchange, as django-cqrs's own consumer binds."""
        pairs = []
        for cqrs_id in self.cqrs_ids:
            pairs.append((self.queue, routing_key(cqrs_id)))
            pairs.append((self.queue, routing_key(cqrs_id, self.queue)))  # direct syncs, requeues
            pairs.append((self.dead_letter_queue, routing_key(cqrs_id, self.dead_letter_queue)))
        return pairs

    # --- what each queue is declared with ------------------------------------------------

    def arguments(self, queue: str, queue_type: str) -> dict:
        """The declare arguments of one of this replica's queues."""
        arguments: dict = {"x-queue-type": queue_type}
        tier = self._tier_of(queue)
        if tier is not None:
            arguments.update(
                {
                    "x-message-ttl": int(tier * 1000),
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": self.queue,
                }
            )
            if queue_type == QUORUM:
                # A retry that expires while the replica's queue is unavailable is kept (and
                # publishers refused) instead of dropped.
                arguments.update(
                    {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
                )
        if queue == self.dead_letter_queue and queue_type == QUORUM:
            # Nothing may drop a dead letter: no delivery limit to reach, and a length limit
            # (a policy) refuses new letters (the consumer keeps the message) instead of
            # dropping the oldest.
            arguments.update(
                {"x-delivery-limit": DEAD_LETTER_DELIVERY_LIMIT, "x-overflow": "reject-publish"}
            )
        return arguments

    def legacy_arguments(self, queue: str, queue_type: str) -> dict | None:
        """The arguments an earlier version declared `queue` with, where they differ from
        today's: accepted as they are (RabbitMQ refuses to change a queue's arguments in place;
        `cqrs_queues migrate` declares it again with today's)."""
        if queue == self.dead_letter_queue and queue_type == QUORUM:
            return {"x-queue-type": queue_type}
        return None

    def _tier_of(self, queue: str) -> float | None:
        for tier in self.policy.tiers():
            if queue == self.retry_queue(tier):
                return tier
        return None

    def existing_type(self, channel: BlockingChannel, queue: str | None = None) -> str | None:
        """The type of `queue` (the replica's queue by default) on the broker, None when it does
        not exist. Probed on channels of their own: a refused declare closes its channel."""
        queue = queue or self.queue
        connection = channel.connection
        probe = connection.channel()
        try:
            probe.queue_declare(queue, passive=True)
        except ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return None
            raise
        with contextlib.suppress(Exception):
            probe.close()
        if self.declared_as_today(connection, queue, QUORUM):
            return QUORUM
        if self._declared_as_before(connection, queue, QUORUM, quiet=True):
            return QUORUM  # with an earlier version's arguments
        return CLASSIC

    def declared_as_today(self, connection, queue: str, queue_type: str) -> bool:
        """Whether the existing `queue` has exactly today's arguments for `queue_type` (a
        declare with them is accepted; probed on a channel of its own)."""
        probe = connection.channel()
        try:
            probe.queue_declare(queue, durable=True, arguments=self.arguments(queue, queue_type))
        except ChannelClosedByBroker as exc:
            if exc.reply_code == 406:
                return False
            raise
        with contextlib.suppress(Exception):
            probe.close()
        return True

    def resolve_type(self, channel: BlockingChannel) -> str:
        """The type the replica's queues must have: the configured one, else the existing
        queue's, else quorum where the broker supports it."""
        if self.queue_type is not None:
            return self.queue_type
        existing = self.existing_type(channel)
        if existing is not None:
            return existing
        return QUORUM if supports_quorum(channel) else CLASSIC

    def declare(self, channel: BlockingChannel) -> list[str]:
        """Declare everything (idempotent); returns a line per object, for humans. Raises
        QueueTypeMismatch when a queue exists with another type."""
        self.ensure_exchange(channel.connection)
        declared = [f"exchange {self.exchange}"]
        queue_type = self.resolve_type(channel)
        for queue in self.queues():
            self._declare_queue(channel.connection, queue, queue_type)
            tier = self._tier_of(queue)
            detail = f", retries wait {format_seconds(tier)}, then {self.queue}" if tier else ""
            declared.append(f"queue {queue} ({queue_type}{detail})")
        for queue, key in self.bindings():
            channel.queue_bind(exchange=self.exchange, queue=queue, routing_key=key)
            declared.append(f"binding {self.exchange} --{key}--> {queue}")
        return declared

    def ensure_exchange(self, connection) -> None:
        """The exchange is the master's: checked with a passive declare, which needs no
        permission (a least-privilege replica may only read from it), and declared only when it
        does not exist yet (a broker without definitions, a replica started first)."""
        probe = connection.channel()
        try:
            probe.exchange_declare(exchange=self.exchange, passive=True)
        except ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise
            probe = connection.channel()
            probe.exchange_declare(exchange=self.exchange, exchange_type="topic", durable=True)
        with contextlib.suppress(Exception):
            probe.close()

    def _declare_queue(self, connection, queue: str, queue_type: str) -> None:
        declaring = connection.channel()
        try:
            declaring.queue_declare(
                queue, durable=True, arguments=self.arguments(queue, queue_type)
            )
        except ChannelClosedByBroker as exc:
            if exc.reply_code != 406:
                raise
            if self._declared_as_before(connection, queue, queue_type):
                return
            other = CLASSIC if queue_type == QUORUM else QUORUM
            raise QueueTypeMismatch(
                f"queue {queue} exists as a {other} queue, but CQRS_QUEUE_TYPE={queue_type} "
                f"(broker: {exc.reply_text}). RabbitMQ cannot change a queue's type in place: "
                f"stop the consumers and run `manage.py cqrs_queues migrate --to {queue_type}`, "
                f"or set CQRS_QUEUE_TYPE={other}"
            ) from None
        with contextlib.suppress(Exception):
            declaring.close()

    def _declared_as_before(
        self, connection, queue: str, queue_type: str, *, quiet: bool = False
    ) -> bool:
        legacy = self.legacy_arguments(queue, queue_type)
        if legacy is None:
            return False
        declaring = connection.channel()
        try:
            declaring.queue_declare(queue, durable=True, arguments=legacy)
        except ChannelClosedByBroker as exc:
            if exc.reply_code != 406:
                raise
            return False
        with contextlib.suppress(Exception):
            declaring.close()
        if quiet:
            return True
        logger.warning(
            "queue %s keeps the arguments of an earlier version (%s); "
            "`manage.py cqrs_queues migrate --to %s` declares it again with today's (CQRS.md)",
            queue, legacy, queue_type,
        )  # fmt: skip
        return True


def supports_quorum(channel: BlockingChannel) -> bool:
    """RabbitMQ 3.10 or newer: quorum queues with message TTL and at-least-once dead-lettering."""
    version = channel.connection._impl.server_properties.get("version", b"0")
    if isinstance(version, bytes):
        version = version.decode(errors="replace")
    try:
        major, minor = (int(part) for part in str(version).split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (3, 10)
