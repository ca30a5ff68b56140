"""The replica's broker topology, declared in one place.

```
exchange cqrs ──"produto"─────────────────────────┐
              ──"cqrs.<queue>.produto" (syncs)───►│ <queue>  ──► consumer
                                                   ▲
<queue>.retry.<delay>s  (x-message-ttl, dead-letters back to <queue>)
dead_letter_<queue>     (what could not be applied, with the reason in headers)
```

Retries wait in per-tier delay queues on the broker, not in a worker's memory: a restart, a crash
or a scale-down loses no scheduled retry, and a message comes back only when its delay expired.
`apis up` declares all of it (`manage.py cqrs_declare`) before the master accepts writes, so no
event is dropped by the exchange for lack of a bound queue while the consumer is starting.
"""

from __future__ import annotations

from dataclasses import dataclass

from dj_cqrs.registries import ReplicaRegistry
from django.conf import settings
from pika.adapters.blocking_connection import BlockingChannel

from django_tools.replica.policy import RetryPolicy, format_seconds
from django_tools.wire import DEFAULT_EXCHANGE, routing_key


@dataclass(frozen=True)
class Topology:
    exchange: str
    queue: str
    dead_letter_queue: str
    policy: RetryPolicy
    cqrs_ids: tuple[str, ...]

    @classmethod
    def named(
        cls,
        queue: str,
        policy: RetryPolicy,
        *,
        exchange: str = DEFAULT_EXCHANGE,
        dead_letter_queue: str | None = None,
        cqrs_ids: tuple[str, ...] = (),
    ) -> Topology:
        """The topology of the replica whose queue is `queue`: every other name derives from
        it here, and only here."""
        return cls(
            exchange=exchange,
            queue=queue,
            dead_letter_queue=dead_letter_queue or f"dead_letter_{queue}",
            policy=policy,
            cqrs_ids=cqrs_ids,
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

    def declare(self, channel: BlockingChannel) -> list[str]:
        """Declare everything (idempotent); returns a line per object, for humans."""
        channel.exchange_declare(exchange=self.exchange, exchange_type="topic", durable=True)
        declared = [f"exchange {self.exchange}"]
        # Plain durable queues, as django-cqrs declares them: a stock consumer can share them.
        for queue in (self.queue, self.dead_letter_queue):
            channel.queue_declare(queue, durable=True)
            declared.append(f"queue {queue}")
        for tier in self.policy.tiers():
            name = self.retry_queue(tier)
            channel.queue_declare(
                name,
                durable=True,
                arguments={
                    "x-message-ttl": int(tier * 1000),
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": self.queue,
                },
            )
            declared.append(
                f"queue {name} (retries wait {format_seconds(tier)}, then {self.queue})"
            )
        for queue, key in self.bindings():
            channel.queue_bind(exchange=self.exchange, queue=queue, routing_key=key)
            declared.append(f"binding {self.exchange} --{key}--> {queue}")
        return declared
