"""Following one request to the replica: a line for each change that carries a correlation id.

Shared by the two ways a change is applied (the consumer's batches, the Celery task), so that
neither imports the other — importing the consumer would bring its broker machinery into every
Celery worker.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django_tools.replica.apply import Change

logger = logging.getLogger("django_tools.replica")


def log_traced(change: Change, outcome: str) -> None:
    """Changes made by a request carry its id: one line each, to follow it to the replica."""
    if change.event.correlation_id:
        logger.info(
            "%s %s %s revision %s: %s",
            change.event.signal_type,
            change.event.cqrs_id,
            change.pk,
            change.revision,
            outcome,
            extra={"correlation_id": change.event.correlation_id},
        )
