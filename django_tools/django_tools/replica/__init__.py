"""Reliable consumption for django-cqrs replicas.

- `policy`: exponential backoff with jitter and a cap, and the retry tiers it needs;
- `topology`: the replica's queue, dead-letter queue and retry-tier queues on RabbitMQ;
- `events`: an AMQP message → a validated event, or the reason it can never be applied;
- `apply`: events → rows, guarded by revision, with tombstones so a delete is never undone;
- `consumer` / `transport`: the consume loop `manage.py cqrs_consume` runs;
- `dead_letters`: what `manage.py cqrs_dead_letters dump|retry|purge` does.
"""
