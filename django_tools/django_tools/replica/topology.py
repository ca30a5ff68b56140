"""The replica's broker topology, declared in one place.

```
exchange cqrs ──"<cqrs_id>"───────────────────────┐
              ──"cqrs.<queue>.<cqrs_id>" (syncs)─►│ <queue>  ──► consumer
                                                   ▲
<queue>.retry.<delay>s  (x-message-ttl, dead-letters back to <queue>)
dead_letter_<queue>     (what could not be applied, with the reason in headers)
```

Quorum queues count each message's deliveries, and past a limit (RabbitMQ 4.x: 20 by default)
drop it unless the queue has a dead-letter target. So the replica's quorum queues have both of
their own: `x-delivery-limit` (CQRS_DELIVERY_LIMIT, above CQRS_MAX_DELIVERIES so that the
consumer's own set-aside of a crash-looping message acts first, see `probation`), and
`<queue>` dead-letters to `dead_letter_<queue>` (at least once), the retry tiers to `<queue>`.
A quorum queue declared before it had these keeps working as it is (declared with what it has,
and a warning): `cqrs_queues migrate --to quorum` declares it again with them.

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

While such a migration is in progress (or was interrupted and not yet run again to its end) its
marker queue `<queue>.migrating-to-<type>` exists, and `declare` refuses (`MigrationInProgress`):
a consumer, the dead-letter page or `cqrs_declare` re-declaring the queue with the old type mid-way
would strand what the migration holds in `<queue>.migrating`. Consumers wait and try again.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass

from dj_cqrs.registries import ReplicaRegistry
from django.conf import settings
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError, ChannelClosedByBroker

from django_tools.env import CLASSIC, QUEUE_TYPES, QUORUM
from django_tools.replica.policy import RetryPolicy, format_seconds
from django_tools.wire import DEFAULT_EXCHANGE, routing_key

logger = logging.getLogger("django_tools.replica")

#: `<queue>.migrating`: where a queue migration holds a queue's messages while it is re-declared.
MIGRATING_SUFFIX = ".migrating"
#: `x-delivery-limit` of the replica's quorum queues (CQRS_DELIVERY_LIMIT).
DELIVERY_LIMIT = 20
#: The dead-letter queue's delivery limit when quorum: as good as none (RabbitMQ 4 otherwise
#: drops a quorum queue's message at its 20th delivery, and this queue has nowhere to
#: dead-letter to). The same on 3.x and 4.x, so an upgrade keeps the declaration equal (-1,
#: "unlimited" on 4.x, means "drop at the first return" on 3.x). Reading never counts a
#: delivery anyway (dead_letters: reading moves letters); this covers readers killed halfway.
DEAD_LETTER_DELIVERY_LIMIT = 2**31 - 1


class QueueTypeMismatch(Exception):
    """The replica's queue exists with another type than the one configured."""

    def __init__(
        self, message: str, *, queue: str = "", actual: str = "", queue_type: str | None = None
    ) -> None:
        super().__init__(message)
        self.queue, self.actual, self.queue_type = queue, actual, queue_type


class MigrationInProgress(AMQPError):
    """A migration of the replica's queues to another type is in progress or was interrupted:
    nothing may declare or consume them until it has finished. An AMQPError, so that whoever
    retries on a broker that is not ready (the consumer) waits and tries again, and whoever
    shows a broker problem (the dead-letter page) shows this one line."""

    def __init__(
        self, message: str, *, queue: str = "", queue_type: str | None = None, marker: str = ""
    ) -> None:
        super().__init__(message)
        self.queue, self.queue_type, self.marker = queue, queue_type, marker

    def __repr__(self) -> str:  # the one line, in the consumer's retry log too
        return str(self)


class UnknownQueueType(Exception):
    """The broker's answers did not tell a queue's type (never guessed)."""


@dataclass(frozen=True)
class Topology:
    exchange: str
    queue: str
    dead_letter_queue: str
    policy: RetryPolicy
    cqrs_ids: tuple[str, ...]
    #: quorum, classic, or None: the existing queue's type, else quorum where supported.
    queue_type: str | None = None
    #: `x-delivery-limit` of its quorum queues.
    delivery_limit: int = DELIVERY_LIMIT

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
        delivery_limit: int = DELIVERY_LIMIT,
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
            delivery_limit=delivery_limit,
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
            delivery_limit=int(replica.get("delivery_limit") or DELIVERY_LIMIT),
        )

    def queues(self) -> list[str]:
        """Every queue of this replica: its own, the dead-letter queue, the retry tiers."""
        return [self.queue, self.dead_letter_queue, *map(self.retry_queue, self.policy.tiers())]

    def retry_queue(self, tier: float) -> str:
        return f"{self.queue}.retry.{format_seconds(tier)}"

    @staticmethod
    def migrating(queue: str) -> str:
        """Where a queue migration holds `queue`'s messages while it is declared again."""
        return queue + MIGRATING_SUFFIX

    def migration_marker(self, queue_type: str) -> str:
        """The (empty) queue that exists while a migration to `queue_type` is not finished."""
        return f"{self.queue}.migrating-to-{queue_type}"

    def migration_in_progress(self, connection) -> str | None:
        """The type an unfinished migration moves the queues to, None when there is none."""
        for queue_type in QUEUE_TYPES:
            if _exists(connection, self.migration_marker(queue_type)):
                return queue_type
        return None

    def refuse_while_migrating(self, connection) -> None:
        queue_type = self.migration_in_progress(connection)
        if queue_type is not None:
            raise MigrationInProgress(
                f"queue {self.queue} is being migrated to {queue_type} (marker queue "
                f"{self.migration_marker(queue_type)}): not declared nor consumed until `manage.py "
                f"cqrs_queues migrate --to {queue_type}` has finished (run it again if it was "
                "interrupted)",
                queue=self.queue,
                queue_type=queue_type,
                marker=self.migration_marker(queue_type),
            )

    def bindings(self) -> list[tuple[str, str]]:
        """(queue, routing key) pairs on the exchange, as django-cqrs's own consumer binds."""
        pairs = []
        for cqrs_id in self.cqrs_ids:
            pairs.append((self.queue, routing_key(cqrs_id)))
            pairs.append((self.queue, routing_key(cqrs_id, self.queue)))  # direct syncs, requeues
            pairs.append((self.dead_letter_queue, routing_key(cqrs_id, self.dead_letter_queue)))
        return pairs

    # --- what each queue is declared with ------------------------------------------------

    def arguments(self, queue: str, queue_type: str, *, limited: bool = True) -> dict:
        """The declare arguments of one of this replica's queues (`limited=False`: as they were
        before the delivery limits, for a queue declared then)."""
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
        if limited and queue_type == QUORUM and (queue == self.queue or tier is not None):
            # Past the limit the broker dead-letters instead of dropping: a retry tier back to
            # the replica's queue (above), the replica's queue to the dead-letter queue.
            arguments["x-delivery-limit"] = self.delivery_limit
            if queue == self.queue:
                arguments.update({
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": self.dead_letter_queue,
                    # Kept until the dead-letter queue has it (it needs reject-publish; the
                    # queue has no length limit, so that never refuses anything).
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                })  # fmt: skip
        if limited and queue == self.dead_letter_queue and queue_type == QUORUM:
            # Nothing may drop a dead letter: no delivery limit to reach, and a length limit
            # (a policy) refuses new letters (the consumer keeps the message) instead of
            # dropping the oldest.
            arguments.update(
                {"x-delivery-limit": DEAD_LETTER_DELIVERY_LIMIT, "x-overflow": "reject-publish"}
            )
        return arguments

    def limited(self, queue: str, queue_type: str) -> bool:
        """Whether `arguments` has delivery limits for `queue` that an older declare lacks."""
        return self.arguments(queue, queue_type) != self.arguments(queue, queue_type, limited=False)

    def _tier_of(self, queue: str) -> float | None:
        for tier in self.policy.tiers():
            if queue == self.retry_queue(tier):
                return tier
        return None

    def existing_type(self, channel: BlockingChannel, queue: str | None = None) -> str | None:
        """The type of `queue` (the replica's queue by default) on the broker, None when it does
        not exist; raises UnknownQueueType rather than guess.

        AMQP has no question for a queue's type: a passive declare answers only its depth. A
        declare whose arguments differ from the queue's is refused (406) naming the first
        argument that differs and the queue's value of it ("inequivalent arg 'x-delivery-limit'
        … received none but current is the value '20' of type 'signedint'"). So: declare with
        the arguments we expect of a quorum queue, take the queue's value of each argument the
        broker names, until it accepts (a quorum queue) or names `x-queue-type` itself, with
        the queue's type. Any other refusal is no answer: an argument we do not expect (a
        delivery limit, a policy's leftover) never reads as "classic" again. Each probe on a
        channel of its own: a refused declare closes its channel."""
        queue = queue or self.queue
        connection = channel.connection
        if not _exists(connection, queue):
            return None
        arguments = self.arguments(queue, QUORUM)
        for _ in range(MAX_TYPE_PROBES):
            probe = connection.channel()
            try:
                probe.queue_declare(queue, durable=True, arguments=arguments)
            except ChannelClosedByBroker as exc:
                if exc.reply_code == 404:
                    return None
                if exc.reply_code != 406:
                    raise
                name, value = _inequivalent(exc.reply_text)
                if name == "x-queue-type":
                    kind = value or CLASSIC  # a queue declared without it is a classic one
                    if not isinstance(kind, str):
                        raise UnknownQueueType(f"queue {queue}: {exc.reply_text}") from None
                    return kind
                if name is None or arguments.get(name) == value:  # nothing we can change
                    raise UnknownQueueType(
                        f"cannot tell the type of queue {queue}: {exc.reply_text}"
                    ) from None
                arguments[name] = value
                if value is None:
                    del arguments[name]
                continue
            with contextlib.suppress(Exception):
                probe.close()
            return arguments["x-queue-type"]
        raise UnknownQueueType(f"cannot tell the type of queue {queue}: too many arguments differ")

    def up_to_date(self, connection, queue: str, queue_type: str) -> bool:
        """Whether `queue`, which exists with `queue_type`, has every argument it is declared
        with now (not a quorum queue of before the delivery limits)."""
        return _declare_refusal(connection, queue, self.arguments(queue, queue_type)) is None

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
        QueueTypeMismatch when a queue exists with another type, MigrationInProgress while a
        migration of the queues is not finished."""
        self.refuse_while_migrating(channel.connection)
        self.ensure_exchange(channel.connection)
        declared = [f"exchange {self.exchange}"]
        queue_type = self.resolve_type(channel)
        for queue in self.queues():
            limited = self._declare_queue(channel.connection, queue, queue_type)
            tier = self._tier_of(queue)
            detail = f", retries wait {format_seconds(tier)}, then {self.queue}" if tier else ""
            if limited:
                detail += f", delivery limit {self.delivery_limit}"
            elif self.limited(queue, queue_type):
                detail += ", no delivery limit: run `cqrs_queues migrate --to quorum`"
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

    def _declare_queue(self, connection, queue: str, queue_type: str) -> bool:
        """Declare one queue; True when it has its delivery limit (a quorum queue declared
        before them is declared as it was, with a warning, and False)."""
        declaring = connection.channel()
        try:
            declaring.queue_declare(
                queue, durable=True, arguments=self.arguments(queue, queue_type)
            )
        except ChannelClosedByBroker as exc:
            if exc.reply_code != 406:
                raise
            existing = self.existing_type(connection.channel(), queue)
            if existing == queue_type:
                self._declare_unlimited(connection, queue, queue_type, exc.reply_text)
                return False
            other = CLASSIC if queue_type == QUORUM else QUORUM
            raise QueueTypeMismatch(
                f"queue {queue} exists as a {other} queue, but CQRS_QUEUE_TYPE={queue_type} "
                f"(broker: {exc.reply_text}). RabbitMQ cannot change a queue's type in place: "
                f"stop the consumers and run `manage.py cqrs_queues migrate --to {queue_type}`, "
                f"or set CQRS_QUEUE_TYPE={other}",
                queue=queue,
                actual=other,
                queue_type=queue_type,
            ) from None
        with contextlib.suppress(Exception):
            declaring.close()
        return self.limited(queue, queue_type)

    def _declare_unlimited(self, connection, queue: str, queue_type: str, refusal: str) -> None:
        """A quorum queue declared with other limits than these (a deployment older than the
        delivery limits, or CQRS_DELIVERY_LIMIT changed since): RabbitMQ cannot change a
        queue's arguments, so it is used as it is, with a warning, and goes on working."""
        declaring = connection.channel()
        try:
            declaring.queue_declare(
                queue, durable=True, arguments=self.arguments(queue, queue_type, limited=False)
            )
            what = "without a delivery limit and dead-letter target (an older deployment)"
        except ChannelClosedByBroker as exc:
            if exc.reply_code != 406:
                raise
            declaring = connection.channel()
            declaring.queue_declare(queue, passive=True)  # it is there, with its own
            what = f"with other arguments than these settings give it ({refusal})"
        with contextlib.suppress(Exception):
            declaring.close()
        logger.warning(
            "queue %s was declared %s; used as it is. Stop the consumers and run `manage.py "
            "cqrs_queues migrate --to %s` to declare it again with today's arguments %s",
            queue, what, queue_type, self.arguments(queue, queue_type),
        )  # fmt: skip


def _declare_refusal(connection, queue: str, arguments: dict) -> str | None:
    """Declare `queue` with `arguments` on a channel of its own: None when accepted, else the
    broker's refusal (406: it exists with other arguments)."""
    probe = connection.channel()
    try:
        probe.queue_declare(queue, durable=True, arguments=arguments)
    except ChannelClosedByBroker as exc:
        if exc.reply_code != 406:
            raise
        return exc.reply_text or "406"
    with contextlib.suppress(Exception):
        probe.close()
    return None


#: Declares `existing_type` tries at most: one per argument that may differ, and the type.
MAX_TYPE_PROBES = 32

_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<name>[^']+)' for queue .*: received .* but current is "
    r"(?:(?P<none>none)|the value '(?P<value>.*)' of type '(?P<type>\w+)'|'(?P<bare>.*)')$",
    re.DOTALL,
)
_INTEGER_TYPES = {"byte", "short", "signedint", "long", "unsignedbyte", "unsignedshort",
                  "unsignedint"}  # fmt: skip


def _inequivalent(reply_text: str) -> tuple[str | None, object]:
    """(argument, the queue's value of it) from a 406 of a declare; (None, None) when the text
    says something else, the value None when the queue has no such argument, the value text
    when its AMQP type has no plain Python value here."""
    match = _INEQUIVALENT.search(reply_text or "")
    if match is None:
        return None, None
    name = match["name"]
    if match["none"]:
        return name, None
    if match["bare"] is not None:
        # No AMQP type given ("received '20' but current is '5'"): a number is sent back as one.
        bare = match["bare"]
        return name, int(bare) if re.fullmatch(r"-?\d+", bare) else bare
    value, kind = match["value"], match["type"]
    if kind == "longstr":
        return name, value
    if kind in _INTEGER_TYPES:
        with contextlib.suppress(ValueError):
            return name, int(value)
    if kind == "bool" and value in ("true", "false"):
        return name, value == "true"
    if kind in ("float", "double"):
        with contextlib.suppress(ValueError):
            return name, float(value)
    return None, None  # a table, an array, a timestamp…: not something we can send back


def _exists(connection, queue: str) -> bool:
    """A passive declare, on a channel of its own (a 404 closes it)."""
    probe = connection.channel()
    try:
        probe.queue_declare(queue, passive=True)
    except ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return False
        raise
    with contextlib.suppress(Exception):
        probe.close()
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
