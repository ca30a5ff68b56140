"""PostgreSQL: the statements run for every event (the outbox write, the relay's outbox read,
the replica's apply) are prepared once per session and executed prepared after that; nothing
else on the session is prepared, and `DB_PREPARED_STATEMENTS=False` prepares nothing
(django_tools.db.prepared)."""

from decimal import Decimal

import pytest
from dj_cqrs.constants import SignalType
from dj_master.models import Book
from django.db import connection
from django.test import override_settings

from django_tools.db import prepared
from django_tools.outbox.models import OutboxEvent
from django_tools.outbox.selectors import unpublished_rows
from django_tools.replica import apply
from django_tools.replica import messages as events

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's (SQLite runs Django's cursor)")
    connection.close()  # a session of its own: no statement prepared by an earlier test
    yield
    connection.close()


def prepared_statements() -> dict[str, int]:
    """The session's prepared statements: text -> times executed with a generic or a custom
    plan."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement, generic_plans + custom_plans FROM pg_prepared_statements")
        return dict(cursor.fetchall())


def pending(n: int) -> None:
    """`n` saves of the master, each in its transaction: `n` outbox rows."""
    for i in range(n):
        Book.objects.create(isbn=f"B-{i}", title="Dune", price=Decimal("7.5"))


def apply_revisions(instance_data, revisions) -> list[str]:
    outcomes = []
    for revision in revisions:
        change = apply.prepare(
            events.Event("book", SignalType.SAVE, 1, revision, instance_data(1, revision))
        )
        with apply.transaction_for([change]):
            outcomes += apply.apply_changes([change])
    return outcomes


def test_the_outbox_write_and_read_and_the_apply_are_prepared_once_and_nothing_else_is(
    instance_data,
):
    pending(3)
    for _ in range(10):
        OutboxEvent.objects.filter(published_at__isnull=True).count()  # Django's own query
    first = unpublished_rows(500)
    assert [row[0] for row in unpublished_rows(500, after=first[0][0])] == [
        row[0] for row in first[1:]
    ]
    assert len(unpublished_rows(500, after=first[0][0])) == 2
    assert apply_revisions(instance_data, range(5)) == ["applied"] * 5

    statements = prepared_statements()
    texts = " | ".join(statements)
    assert f"INSERT INTO {OutboxEvent._meta.db_table}" in texts.replace('"', "")  # the write
    assert "pg_notify" in texts  # ...and its wake-up, with the row in it
    assert "published_at IS NULL" in texts  # the outbox read, with and without its cursor
    assert "pg_advisory_xact_lock" in texts  # the apply's row locks...
    assert "ON CONFLICT" in texts  # ...its upserts (the row, the replica's state)
    assert "COUNT(*) AS" not in texts  # Django's own queries are not prepared
    # Each statement prepared once and executed again prepared, not prepared again.
    assert max(statements.values()) >= 5
    assert len(statements) <= 9  # those 9 (and their variants by parameter types, none here)


@override_settings(DB_PREPARED_STATEMENTS=False)
def test_with_prepared_statements_off_nothing_is_prepared(instance_data):
    assert not prepared.enabled(connection)
    pending(3)
    assert len(unpublished_rows(500)) == 3
    assert apply_revisions(instance_data, range(3)) == ["applied"] * 3
    assert prepared_statements() == {}
