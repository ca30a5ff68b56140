"""Reliable consumption for django-cqrs replicas (a Django app: add `django_tools.replica`
before `dj_cqrs`, so its `cqrs_consume` and `cqrs_dead_letters` replace the stock ones).

- `policy`: exponential backoff with jitter and a cap, and the retry tiers it needs;
- `topology`: the replica's queue, dead-letter queue and retry-tier queues on RabbitMQ;
- `messages`: an AMQP message body → an event, or the reason it can never be applied;
- `apply`: the one place where an event becomes a row — guarded by revision, with tombstones
  so a delete is never undone; it orchestrates `values` (validation), `hooks` (a model's own
  django-cqrs hooks), `decision` (revisions and tombstones) and `write`, none of which imports
  it (`managers.ConvergentReplicaManager` routes django-cqrs's own entry points there too, and
  depends on that core, never the other way);
- `failures`: the one place where a failure is classified (retry or dead letter) and its copy
  made and sent;
- `consumer` / `transport`: the consume loop `manage.py cqrs_consume` runs (cqrs mode);
  `tasks.apply_event` applies one change per Celery task (celery mode);
- `dead_letters`: what `manage.py cqrs_dead_letters dump|retry|purge` does.
"""
