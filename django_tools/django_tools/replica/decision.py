"""Revisions and tombstones: whether each change of a batch is applied, given what the replica
holds for its row. Pure — the caller has locked the rows' keys and read their state.

- a save applies only if its revision is higher than the row's (a sync also at the same
  revision, to repair a row in place); duplicates and older revisions are ignored;
- a delete applies only if its revision is higher than the row's and the tombstone's, and
  leaves a tombstone; a save at or below that revision is stale (a redelivery, a late message
  of another worker) and is ignored, so a delete is never undone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django_tools.replica.values import Change

APPLIED, DUPLICATE, STALE, DELETED = "applied", "duplicate", "stale", "deleted_before"


@dataclass
class RowState:
    row: int | None  # revision of the replica row, None when there is none
    tomb: int | None  # revision of the tombstone, None when there is none


def decide(change: Change, current: RowState) -> str:
    revision = change.revision
    if change.values is None:  # delete
        if current.tomb is not None and current.tomb >= revision:
            return DUPLICATE
        if current.row is not None and current.row >= revision:
            return STALE
        return APPLIED
    if current.tomb is not None and current.tomb >= revision:
        return DELETED
    if current.row is not None:
        if current.row > revision:
            return STALE
        if current.row == revision and not change.event.is_sync:
            return DUPLICATE
    return APPLIED


def decide_batch(
    changes: list[Change], state: dict[Any, RowState]
) -> tuple[list[str], dict[Any, Change]]:
    """An outcome per change, in order, each decided on the state the changes before it left
    (`state` is updated in place); and per row the applied change that decides its final
    state."""
    outcomes: list[str] = []
    last: dict[Any, Change] = {}
    for change in changes:
        current = state[change.pk]
        outcome = decide(change, current)
        if outcome == APPLIED:
            last[change.pk] = change
            if change.values is None:
                current.row, current.tomb = None, change.revision
            else:
                current.row, current.tomb = change.revision, None
        outcomes.append(outcome)
    return outcomes, last
