"""Queries the server plans once: on PostgreSQL (psycopg 3), the few statements a process runs
for every event execute as prepared statements of its session; elsewhere (SQLite), or with
`DB_PREPARED_STATEMENTS` off, through Django's own cursor as before.

Django's PostgreSQL cursors bind their parameters on the client (psycopg's `ClientCursor`), so
the server parses and plans every execution. Measured on this project's hot statements:

- the relay's outbox read (a windowed query: sizes, a running sum, a join): planning was 0.10 ms
  of its 0.12 ms on the server (EXPLAIN ANALYZE); ~210 µs a read from the relay, ~100 µs
  prepared. The read sits between a commit's wake-up and its publish: at low load it is latency;
- a consumer's one-change batch (row locks, the state's two reads, the upsert, the replica's
  state): ~800 -> ~670 µs wall (tests/bench_apply.py).

A prepared statement lives in its session: a pooler in transaction mode that does not keep them
(PgBouncer before 1.21) may send the next execution to a session that never prepared it.
`DB_PREPARED_STATEMENTS=false` turns this off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from django_tools.conf import setting

#: psycopg prepares a statement after this many executions (`prepare_threshold`); Django leaves
#: it at None, which forbids preparing at all. Set this high, the session's other queries are
#: never prepared behind their back: only the executions that ask (`execute(prepare=True)`;
#: psycopg's `executemany` always asks).
_ONLY_WHEN_ASKED = 2**31 - 1


def enabled(connection) -> bool:
    return (
        connection.vendor == "postgresql"
        and getattr(connection.Database, "__name__", "") == "psycopg"
        and bool(setting("DB_PREPARED_STATEMENTS"))
    )


@contextlib.contextmanager
def cursor(connection) -> Iterator[Any]:
    """A cursor whose `execute(sql, params, prepare=True)` and `executemany` run prepared
    statements where `enabled`; else Django's cursor, where `prepare` is not accepted: call
    `execute` through `run`."""
    if not enabled(connection):
        with connection.cursor() as django_cursor:
            yield django_cursor
        return
    import psycopg

    # What Django's `cursor()` does before it makes one, without making one (a few tens of µs,
    # and a batch asks for four or five of these).
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    raw = connection.connection
    if raw.prepare_threshold is None:
        raw.prepare_threshold = _ONLY_WHEN_ASKED
    # Errors as Django's classes, as from its own cursor (callers catch DatabaseError).
    with connection.wrap_database_errors, psycopg.Cursor(raw) as server_cursor:
        yield server_cursor


def run(cursor_: Any, sql: str, params: list[Any]) -> None:
    """`cursor_.execute`, prepared when it is a `cursor` of a prepared session."""
    if _is_server_cursor(cursor_):
        cursor_.execute(sql, params, prepare=True)
    else:
        cursor_.execute(sql, params)


def fetchall(connection, sql: str, params: list[Any]) -> list[tuple]:
    """`sql`'s rows, prepared where `enabled`."""
    with cursor(connection) as cursor_:
        run(cursor_, sql, params)
        return cursor_.fetchall()


def _is_server_cursor(cursor_: Any) -> bool:
    import psycopg

    return type(cursor_) is psycopg.Cursor
