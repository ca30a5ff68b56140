"""Periodic work of a replica (Celery beat): the dead-letter report."""

from __future__ import annotations

import logging

from celery import shared_task

from django_tools import signing, tracing
from django_tools.replica import metrics
from django_tools.replica.status import broker_view
from django_tools.replica.topology import Topology
from django_tools.wire import APPLY_TASK

logger = logging.getLogger("django_tools.replica")


@shared_task(name="replica.dead_letter_report")
def dead_letter_report() -> int | None:
    """A warning and a metric while the dead-letter queue is not empty; its size, or None when
    the broker did not answer."""
    topology = Topology.from_settings()
    view = broker_view(topology, fresh_for=0)  # now, not what a request saw a second ago
    count = view.depths.dead_letters if view.reachable else None
    if count is None:
        logger.warning("dead-letter report: broker unreachable (%s)", view.error)
        return None
    metrics.DEAD_LETTER_REPORT_MESSAGES.set(count)
    metrics.DEAD_LETTERS_REPORTED_DEPRECATED.set(count)
    if count:
        metrics.DEAD_LETTER_REPORTS.inc()
        logger.warning(
            "%s messages in %s: `manage.py cqrs_dead_letters dump --detail` shows why, `retry` "
            "replays them",
            count,
            topology.dead_letter_queue,
        )
    return count


@shared_task(bind=True, name=APPLY_TASK, acks_late=True, ignore_result=True)
def apply_event(self, body: str) -> str:
    """REPLICATION_MODE=celery: one change, as the master's relay sent it (django-cqrs's
    payload JSON), applied by the same rules as the consumer and classified by the same
    `failures.classify`. Transient failures are retried with Celery's retry and this replica's
    backoff; what cannot be applied goes to the same dead-letter queue, with the same headers,
    as in cqrs mode."""
    from django_tools.replica.apply import apply_changes, prepare, transaction_for
    from django_tools.replica.failures import SetAside, classify
    from django_tools.replica.messages import decode
    from django_tools.replica.traced_changes import log_traced

    metrics.EVENTS_CONSUMED.inc()
    # The relay sends the body as a string; anything else on this queue is kept as it came.
    payload = body.encode() if isinstance(body, str) else repr(body).encode()
    topology = Topology.from_settings()
    retries = self.request.retries
    validating, model = True, None
    headers = self.request.headers or {}
    try:
        signing.verify(payload, headers)  # CQRS_SIGNING_KEY set: the relay's signature
        change = prepare(decode(payload))
        validating, model = False, change.model
        # Traced: a child of the task's span, which the Celery instrumentation continued from
        # the relay's publish.
        with (
            tracing.span("cqrs.apply", **{"cqrs.id": change.event.cqrs_id}),
            transaction_for([change]),
        ):
            (outcome,) = apply_changes([change])
    except Exception as exc:
        decision = classify(exc, retries, topology.policy, validating=validating, model=model)
        if isinstance(decision, SetAside):
            _dead_letter(topology, decision, payload, exc, retries, headers)
            return "dead_lettered"
        metrics.EVENTS_RETRIED.inc()
        raise self.retry(exc=exc, countdown=decision.delay, max_retries=None) from exc
    metrics.EVENTS_APPLIED.labels(change.event.cqrs_id, outcome).inc()
    log_traced(change, outcome)
    return outcome


def _dead_letter(
    topology: Topology,
    decision,
    body: bytes,
    exc: BaseException,
    retries: int,
    task_headers: dict | None = None,
):
    from django.conf import settings
    from pika import BasicProperties

    from django_tools.connectivity import amqp_channel
    from django_tools.replica.failures import (
        FIRST_FAILURE,
        LETTER_ID,
        failed_copy,
        publish_copy,
    )

    # The letter keeps the event's signature (retried from the dead-letter queue, it still
    # passes) and, for a letter retried from there (dead_letters._send_as_task), its identity
    # and first failure: dying again, it is the same letter.
    kept = {
        key: value
        for key, value in (task_headers or {}).items()
        if key in (signing.HEADER, FIRST_FAILURE, LETTER_ID) and value
    }
    properties = BasicProperties(headers=kept) if kept else None
    copy = failed_copy(
        decision, exc, topology=topology, properties=properties, routing_key="celery",
        retries=retries,
    )  # fmt: skip
    with amqp_channel(settings.CQRS["url"]) as channel:
        channel.confirm_delivery()
        publish_copy(channel, copy, body)
    logger.warning("%s", copy.description)
