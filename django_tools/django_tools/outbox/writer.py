"""The one place where a master's change becomes an event: a row of the outbox."""

from __future__ import annotations

import logging
from decimal import Decimal

import orjson
from dj_cqrs.dataclasses import TransportPayload
from django.db import connections, router
from django.utils import timezone

from django_tools import tracing
from django_tools.db import prepared
from django_tools.outbox import metrics, wake
from django_tools.outbox.models import OutboxEvent
from django_tools.wire import routing_key

logger = logging.getLogger("django_tools.outbox")


def enqueue(payloads: list[TransportPayload], using: str | None = None) -> None:
    """Write the events in the current transaction; the relay publishes them after the commit
    (woken by it: `wake`).

    One executemany of plain values: the ORM's per-field preparation cost more than the rest
    of a master's write path together (measured with the bench's writer)."""
    connection = connections[using or router.db_for_write(OutboxEvent)]
    created_at = _CREATED_AT.get_db_prep_save(timezone.now(), connection)
    traced = tracing.enabled()
    rows = []
    for payload in payloads:
        revision = (payload.instance_data or {}).get("cqrs_revision")
        trace_context = ""
        if traced:
            # A span of its own: the relay's publish is its child, and the trace shows how
            # long the event waited in the outbox.
            with tracing.span("cqrs.outbox.write", **_attributes(payload)):
                trace_context = tracing.serialize()
        rows.append(
            (
                payload.cqrs_id,
                str(payload.pk),
                payload.signal_type,
                revision if isinstance(revision, int) else None,
                routing_key(payload.cqrs_id, payload.queue),
                orjson.dumps(payload.to_dict(), default=_json_default).decode(),
                str(payload.correlation_id or "")[:128],
                trace_context,
                created_at,
            )
        )
    carried = len(rows) == 1 and wake.carries(connection)
    # PostgreSQL: a prepared statement, planned once per session (django_tools.db.prepared).
    with prepared.cursor(connection) as cursor:
        if carried:
            # One change: its row, then the relay's wake-up with the row in it
            # (`wake.carried_payload`; PostgreSQL: in the transaction, SQLite: at the commit):
            # the relay publishes it without a read.
            prepared.run(cursor, _insert_sql(connection) + " RETURNING id", list(rows[0]))
            (outbox_id,) = cursor.fetchone()
            written = dict(zip(_COLUMNS, rows[0], strict=True))
            payload = wake.carried_payload(
                (outbox_id, written["routing_key"], written["body"], written["correlation_id"],
                 written["trace_context"])
            )  # fmt: skip
            if connection.vendor == "postgresql":
                prepared.run(cursor, "SELECT pg_notify(%s, %s)", [wake.channel(), payload])
        elif len(rows) == 1:
            # One change (a REST write, a save): psycopg's executemany runs even one row in
            # pipeline mode, with its own sync, at about twice execute's CPU.
            prepared.run(cursor, _insert_sql(connection), list(rows[0]))
        else:
            cursor.executemany(_insert_sql(connection), rows)
    if not carried:
        wake.after_write(connection)  # the relay reads at commit, not at its next poll
    elif connection.vendor != "postgresql":
        wake.after_write(connection, carried=payload)  # SQLite: a datagram at the commit
    for payload in payloads:
        metrics.OUTBOX_WRITTEN.labels(payload.cqrs_id, payload.signal_type).inc()
        if payload.correlation_id:
            # A change made by a request. DEBUG: the request's own line (INFO) already carries
            # the id on the master, and the consumer's line shows the change on the replica; at
            # INFO this line cost a REST burst ~10% of its throughput (one more line per write
            # through the log pipeline).
            logger.debug(
                "%s %s %s revision %s written to the outbox",
                payload.signal_type,
                payload.cqrs_id,
                payload.pk,
                (payload.instance_data or {}).get("cqrs_revision"),
                extra={"correlation_id": payload.correlation_id},
            )


def _json_default(value):
    # A master's stock `to_cqrs_dict()` leaves DecimalField values as Decimal (django-cqrs's
    # ujson writes them as floats); as a string the exact value travels, and any replica's
    # DecimalField reads it.
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_CREATED_AT = OutboxEvent._meta.get_field("created_at")
_COLUMNS = (
    "cqrs_id", "instance_pk", "signal_type", "revision", "routing_key", "body", "correlation_id",
    "trace_context", "created_at",
)  # fmt: skip


def _attributes(payload: TransportPayload) -> dict:
    return {
        "cqrs.id": payload.cqrs_id,
        "cqrs.signal_type": payload.signal_type,
        "cqrs.instance_pk": str(payload.pk),
    }


def _insert_sql(connection) -> str:
    quote = connection.ops.quote_name
    columns = ", ".join(quote(column) for column in _COLUMNS)
    placeholders = ", ".join(["%s"] * len(_COLUMNS))
    return f"INSERT INTO {quote(OutboxEvent._meta.db_table)} ({columns}) VALUES ({placeholders})"  # nosec B608 # quoted identifiers, values are parameters
