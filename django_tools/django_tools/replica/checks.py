"""System checks of a replica: misconfigurations found when the process starts (`check`,
`migrate`, `cqrs_consume`, `apis up`), each with the fix, instead of per message at run time —
where, being a configuration error, it would be retried for ~23 minutes, then dead-lettered."""

from __future__ import annotations

from django.conf import settings
from django.core import checks

from django_tools.conf import REPLICA_TRANSPORT

REPLICA_OPTIONS = ("CQRS_MAX_RETRIES", "retry_base", "retry_factor", "retry_cap", "retry_jitter",
                   "prefetch", "batch_size")  # fmt: skip


@checks.register("cqrs")
def check_replica(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    from dj_cqrs.registries import ReplicaRegistry

    from django_tools.replica.hooks import is_convergent

    problems: list[checks.CheckMessage] = []
    cqrs = getattr(settings, "CQRS", None)
    if not isinstance(cqrs, dict):
        return [checks.Error("CQRS is not set", hint="see CQRS.md (Configuração)",
                             id="django_tools.replica.E001")]  # fmt: skip
    if not cqrs.get("queue"):
        problems.append(checks.Error(
            "CQRS['queue'] is not set: the replica has no queue to consume",
            hint="set CQRS_QUEUE, or 'queue' in the service's CQRS setting",
            id="django_tools.replica.E002",
        ))  # fmt: skip
    missing = [key for key in REPLICA_OPTIONS if key not in cqrs.get("replica", {})]
    if missing:
        problems.append(checks.Error(
            f"CQRS['replica'] lacks {', '.join(missing)}",
            hint="start from CQRS_REPLICA_OPTIONS in django_tools.chassis.settings.cqrs",
            id="django_tools.replica.E003",
        ))  # fmt: skip
    if not ReplicaRegistry.models:
        problems.append(checks.Error(
            "no replica model is registered: cqrs_consume would consume nothing",
            hint="declare a model with dj_cqrs.mixins.ReplicaMixin and a CQRS_ID",
            id="django_tools.replica.E004",
        ))  # fmt: skip
    for cqrs_id, model in ReplicaRegistry.models.items():
        if not is_convergent(model):
            problems.append(checks.Error(
                f"replica model of CQRS_ID {cqrs_id!r} does not use the convergent manager: its "
                "changes would bypass revisions and tombstones",
                hint="add `cqrs = ConvergentReplicaManager()` "
                "(from django_tools.replica.managers) to the model",
                obj=model, id="django_tools.replica.E005",
            ))  # fmt: skip
    problems += _databases(ReplicaRegistry.models.values())
    problems += _delivery_limits(cqrs.get("replica", {}))
    problems += _stock_retry_settings(cqrs.get("replica", {}))
    if cqrs.get("transport") != REPLICA_TRANSPORT:
        problems.append(checks.Warning(
            f"CQRS['transport'] is {cqrs.get('transport')!r}: cqrs_consume will not use the "
            "reliable consumer (retry tiers, dead letters with reasons, batches)",
            hint=f"use {REPLICA_TRANSPORT} (unset CQRS_TRANSPORT)",
            id="django_tools.replica.W001",
        ))  # fmt: skip
    return problems


def _delivery_limits(replica: dict) -> list[checks.CheckMessage]:
    """The consumer sets a crash-looping message aside after CQRS_MAX_DELIVERIES deliveries;
    the broker's limit is the backstop behind it, so it must be the larger."""
    from django_tools.replica.probation import MAX_DELIVERIES
    from django_tools.replica.topology import DELIVERY_LIMIT

    try:
        most = int(replica.get("max_deliveries") or MAX_DELIVERIES)
        limit = int(replica.get("delivery_limit") or DELIVERY_LIMIT)
    except (TypeError, ValueError):
        most, limit = 0, 0
    if most >= 2 and limit > most:
        return []
    return [checks.Error(
        f"CQRS_MAX_DELIVERIES={replica.get('max_deliveries')} and CQRS_DELIVERY_LIMIT="
        f"{replica.get('delivery_limit')}: need 2 <= CQRS_MAX_DELIVERIES < CQRS_DELIVERY_LIMIT",
        hint=f"the defaults are {MAX_DELIVERIES} and {DELIVERY_LIMIT}: the consumer sets a "
        "message that kills its workers aside first, the broker's limit is the backstop",
        id="django_tools.replica.E008",
    )]  # fmt: skip


def _stock_retry_settings(replica: dict) -> list[checks.CheckMessage]:
    """django-cqrs's own retry settings are honoured (replica.stock_retry, replica.policy);
    these are the values of them (and of its dead letters' TTL) that cannot be, each with what
    to use instead."""
    from django_tools.replica.policy import RetryPolicy
    from django_tools.replica.stock_retry import DELAY_QUEUE_MAX_SIZE, RETRY_DELAY, written

    problems = []
    stock = written(replica)
    if "CQRS_MAX_RETRIES" in replica and replica["CQRS_MAX_RETRIES"] is None:
        problems.append(checks.Warning(
            f"CQRS_MAX_RETRIES=None (django-cqrs: retry forever) is taken as "
            f"{RetryPolicy.max_retries} here: a message that never applies must reach the "
            "dead-letter queue, where it can be read and sent back",
            hint="set CQRS_MAX_RETRIES to a number (the retries before the dead-letter queue)",
            id="django_tools.replica.W004",
        ))  # fmt: skip
    if DELAY_QUEUE_MAX_SIZE in stock and stock[DELAY_QUEUE_MAX_SIZE] is None:
        problems.append(checks.Warning(
            "delay_queue_max_size=None (django-cqrs: no prefetch limit) is not honoured: "
            "retries wait on the broker here, and a worker's unacknowledged messages stay "
            "bounded by CQRS_PREFETCH and CQRS_PREFETCH_BYTES",
            hint="remove delay_queue_max_size; set CQRS_PREFETCH to change the prefetch",
            id="django_tools.replica.W005",
        ))  # fmt: skip
    if replica.get("dead_message_ttl") is not None:
        problems.append(checks.Warning(
            f"dead_message_ttl={replica['dead_message_ttl']} (django-cqrs: dead letters expire) "
            "is not honoured: a dead letter stays until someone reads it",
            hint="remove dead_message_ttl; drop letters with `manage.py cqrs_dead_letters "
            "purge` (filters: --reason, --cqrs-id, --id)",
            id="django_tools.replica.W007",
        ))  # fmt: skip
    if RETRY_DELAY in stock:
        backoff = {key: replica.get(key, getattr(RetryPolicy, name))
                   for key, name in BACKOFF_OPTIONS.items()}  # fmt: skip
        ignored = [f"{key}={value}" for key, value in backoff.items()
                   if value != getattr(RetryPolicy, BACKOFF_OPTIONS[key])]  # fmt: skip
        if ignored:
            problems.append(checks.Warning(
                f"CQRS_RETRY_DELAY={stock[RETRY_DELAY]} (every retry waits that long) is set "
                f"with {', '.join(ignored)}: the backoff settings are ignored",
                hint="keep one: CQRS_RETRY_DELAY for a constant wait, or CQRS_RETRY_BASE, "
                "CQRS_RETRY_FACTOR and CQRS_RETRY_CAP for the exponential backoff",
                id="django_tools.replica.W006",
            ))  # fmt: skip
    return problems


#: The backoff's settings (CQRS['replica'] key → RetryPolicy field), which CQRS_RETRY_DELAY
#: replaces.
BACKOFF_OPTIONS = {"retry_base": "base", "retry_factor": "factor", "retry_cap": "cap"}


def _databases(models) -> list[checks.CheckMessage]:
    """A replica model's tombstones and state are kept in its own database (the one the router
    writes it to), so that a change and its tombstone commit together: their tables must exist
    there."""
    from django.db import router

    from django_tools.replica.apply import database_of
    from django_tools.replica.models import ReplicaState, Tombstone

    problems = []
    for model in models:
        alias = database_of(model)
        refused = [
            kept._meta.label
            for kept in (Tombstone, ReplicaState)
            if not router.allow_migrate_model(alias, kept)
        ]
        if refused:
            problems.append(checks.Error(
                f"{model._meta.label} is written to database {alias!r}, where the router does "
                f"not migrate {', '.join(refused)}: its tombstones and state are kept there",
                hint=f"let allow_migrate() create django_tools.replica's tables in {alias!r} "
                f"and run `migrate --database {alias}`",
                obj=model, id="django_tools.replica.E007",
            ))  # fmt: skip
    return problems


@checks.register("cqrs_broker", deploy=True)
def check_queue_type(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """The replica's queue type against the broker (a connection: run by `cqrs_consume` and
    `check --deploy`, not by every command)."""
    from pika.exceptions import AMQPError

    from django_tools.broker import blocking_connection
    from django_tools.replica.topology import Topology, UnknownQueueType

    topology = Topology.from_settings()
    if topology.queue_type is None:
        return []
    try:
        connection = blocking_connection(socket_timeout=5, stack_timeout=5)
    except (AMQPError, OSError) as exc:
        return [checks.Warning(f"cannot check the queue type: broker unreachable ({exc!r})",
                               id="django_tools.replica.W002")]  # fmt: skip
    try:
        underway = topology.migration_in_progress(connection)
        existing = None if underway else topology.existing_type(connection.channel())
    except UnknownQueueType as exc:
        return [checks.Warning(f"cannot check the queue type: {exc}",
                               id="django_tools.replica.W002")]  # fmt: skip
    finally:
        connection.close()
    if underway is not None:
        # Not an error: the consumers start, wait for the migration to end (Topology.declare
        # refuses meanwhile), then find the type it left.
        return [checks.Warning(
            f"a migration of queue {topology.queue} to {underway} is not finished: consumers "
            "wait until it is",
            hint=f"run `manage.py cqrs_queues migrate --to {underway}` (again) to finish it",
            id="django_tools.replica.W003",
        )]  # fmt: skip
    if existing is None or existing == topology.queue_type:
        return []
    return [checks.Error(
        f"queue {topology.queue} is a {existing} queue on the broker, CQRS_QUEUE_TYPE="
        f"{topology.queue_type}",
        hint=f"stop the consumers and run `manage.py cqrs_queues migrate --to "
        f"{topology.queue_type}`, or set CQRS_QUEUE_TYPE={existing}",
        id="django_tools.replica.E006",
    )]  # fmt: skip
