"""Periodic work of a replica (Celery beat): the dead-letter report."""

from __future__ import annotations

import logging

from celery import shared_task

from django_tools.observability import metrics
from django_tools.replica.status import broker_view
from django_tools.replica.topology import Topology

logger = logging.getLogger("django_tools.replica")


@shared_task(name="replica.dead_letter_report")
def dead_letter_report() -> int | None:
    """A warning and a metric while the dead-letter queue is not empty; its size, or None when
    the broker did not answer."""
    topology = Topology.from_settings()
    view = broker_view(topology)
    count = view.depths.dead_letters if view.reachable else None
    if count is None:
        logger.warning("dead-letter report: broker unreachable (%s)", view.error)
        return None
    metrics.DEAD_LETTERS_REPORTED.set(count)
    if count:
        metrics.DEAD_LETTER_REPORTS.inc()
        logger.warning(
            "%s messages in %s: `manage.py cqrs_dead_letters dump` shows why, `retry` replays them",
            count,
            topology.dead_letter_queue,
        )
    return count
