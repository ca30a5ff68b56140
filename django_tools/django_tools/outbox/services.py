"""Writes on the outbox after a change wrote its row (that is `writer.enqueue`): marking rows
published (the relays), republishing rows (the console) and pruning what was published long
enough ago (beat)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from django.db import connections, router, transaction
from django.utils import timezone

from django_tools.outbox import wake
from django_tools.outbox.models import OutboxEvent

PRUNE_CHUNK = 5000


#: Ids per UPDATE of `mark_published` (a relay marks up to two batches at once).
MARK_CHUNK = 500


def mark_published(ids: list[int]) -> None:
    """The broker confirmed these rows: they will not be sent again.

    Raw SQL, built from the model's names: the ORM's `filter(id__in=…).update(…)` spent more
    CPU compiling the statement than the database running it, and the relay runs it all the
    time. In a transaction of its own: on SQLite that takes the write gate, so a relay that
    meets the master's writer queues behind it instead of being put to sleep by SQLite's busy
    handler (1, 2, 5, 10… ms).

    On PostgreSQL the transaction commits without waiting for its WAL to reach the disk
    (`synchronous_commit = off`, for it alone): a mark lost to a crash of the database server
    in the next fraction of a second only sends those rows again, which the replica ignores
    (it applies by revision), while waiting for that flush held the relay — and the next
    commit's event behind it — for a disk write per batch, on the disk the broker's log and
    every other commit share."""
    if not ids:
        return
    alias = router.db_for_write(OutboxEvent)
    connection = connections[alias]
    field = OutboxEvent._meta.get_field("published_at")
    now = field.get_db_prep_save(timezone.now(), connection)
    quote = connection.ops.quote_name
    table, column = quote(OutboxEvent._meta.db_table), quote(field.column)
    key = quote(OutboxEvent._meta.pk.column)
    # In the first statement's round trip (Django binds parameters on the client here). Only
    # for a transaction of its own: inside a caller's, it would also be the caller's writes.
    own = connection.vendor == "postgresql" and not connection.in_atomic_block
    lazy = "SET LOCAL synchronous_commit = off; " if own else ""
    with transaction.atomic(using=alias), connection.cursor() as cursor:
        for start in range(0, len(ids), MARK_CHUNK):
            chunk = ids[start : start + MARK_CHUNK]
            marks = ", ".join(["%s"] * len(chunk))
            # Names from the model and the backend, values as parameters: not an injection.
            cursor.execute(
                f"{lazy}UPDATE {table} SET {column} = %s WHERE {key} IN ({marks})",  # nosec B608
                [now, *chunk],
            )
            lazy = ""


def republish(ids: Iterable[int]) -> list[int]:
    """Send these rows' events again: each becomes a NEW pending row (same routing key, body,
    correlation id and trace context) at the end of the outbox, in the old rows' order; returns
    the new ids. The old rows are left as they are.

    Not "set the old row back to pending": a relay may hold that row in flight (read, sent,
    waiting for the broker's confirm) and its `mark_published` of the old id, a moment later,
    would silently undo the operator's republish — the event then went out before the click,
    not after. A new row has an id no relay has read yet, so it is always sent after the
    republish. Replicas ignore what they already have (by revision)."""
    alias = router.db_for_write(OutboxEvent)
    with transaction.atomic(using=alias):
        now = timezone.now()
        copies = [
            OutboxEvent(
                cqrs_id=row.cqrs_id, instance_pk=row.instance_pk, signal_type=row.signal_type,
                revision=row.revision, routing_key=row.routing_key, body=row.body,
                correlation_id=row.correlation_id, trace_context=row.trace_context,
                created_at=now,
            )
            for row in OutboxEvent.objects.filter(id__in=list(ids)).order_by("id")
        ]  # fmt: skip
        created = [copy.id for copy in OutboxEvent.objects.bulk_create(copies)]
        if created:
            wake.after_write(connections[alias])
        return created


def prune_published(*, older_than: timedelta, chunk: int = PRUNE_CHUNK) -> int:
    """Delete rows published before `now - older_than`, a chunk at a time (short transactions,
    bounded memory); returns how many."""
    cutoff = timezone.now() - older_than
    deleted = 0
    while True:
        ids = list(
            OutboxEvent.objects.filter(published_at__lt=cutoff)
            .order_by("id")
            .values_list("id", flat=True)[:chunk]
        )
        if not ids:
            return deleted
        deleted += OutboxEvent.objects.filter(id__in=ids).delete()[0]
