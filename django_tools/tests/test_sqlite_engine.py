"""The SQLite engine (django_tools.db.sqlite): checkpoints run by a background thread after a
write commits, not by the commit that takes the WAL past SQLite's threshold."""

import sqlite3

import pytest
from django.db.utils import ConnectionHandler

from django_tools.db.sqlite import base as engine
from django_tools.testing import wait_until

pytestmark = pytest.mark.any_database


@pytest.fixture
def database(tmp_path, django_db_blocker):
    path = tmp_path / "engine.sqlite3"
    handler = ConnectionHandler(
        {"default": {"ENGINE": "django_tools.db.sqlite", "NAME": str(path),
                     "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL"}}}
    )  # fmt: skip
    connection = handler["default"]
    with django_db_blocker.unblock():  # a database of its own, not the test database
        yield path, connection
        connection.close()


def write(connection, rows: int) -> None:
    """`rows` write transactions, as `transaction.atomic` runs them on SQLite."""
    for n in range(rows):
        connection._start_transaction_under_autocommit()  # takes the write gate
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO t (v) VALUES (%s)", [n])
        connection.commit()


def wal_frames(path) -> tuple[int, int]:
    """(frames in the WAL, frames of it already copied into the database)."""
    with sqlite3.connect(path) as probe:
        _busy, log, done = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return log, done


def test_writes_are_checkpointed_in_the_background(database):
    path, connection = database
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE t (v INTEGER)")
        cursor.execute("PRAGMA wal_autocheckpoint")
        # The commits' own checkpoint stays, far away, as the safety net.
        assert cursor.fetchone()[0] == engine.FALLBACK_AUTOCHECKPOINT
    checkpointer = engine._checkpointer_for(str(path))
    before = checkpointer.checkpoints
    write(connection, 50)  # well under SQLite's 1000 pages: no commit checkpoints here
    wait_until(lambda: checkpointer.checkpoints > before, what="a background checkpoint")
    log, done = wal_frames(path)
    assert log > 0 and done == log  # every frame written is in the database file already
    assert connection.cursor().execute("SELECT COUNT(*) FROM t").fetchone()[0] == 50


def test_a_database_deleted_meanwhile_is_not_created_again(database, tmp_path):
    path, connection = database
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE t (v INTEGER)")
    checkpointer = engine._checkpointer_for(str(path))
    write(connection, 1)
    connection.close()
    for leftover in tmp_path.glob("engine.sqlite3*"):
        leftover.unlink()
    failures = checkpointer.failures
    checkpointer.written()  # the thread's next connection comes after the file is gone
    wait_until(lambda: checkpointer.failures > failures, what="the checkpoint attempt")
    assert not path.exists()
