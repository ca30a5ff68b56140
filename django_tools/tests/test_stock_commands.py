"""django-cqrs's commands that write the replica keep the replica's rules: a deleted row leaves a
tombstone (no late save brings it back) and the replica's version moves (a cache keyed on it never
serves what changed). The stock `cqrs_deleted_sync_replica` deleted with a plain queryset, and
`cqrs_bulk_load --clear` left tombstones that hid every row it loaded again."""

import io
import json
import sys

import pytest
from dj_cqrs.constants import SignalType
from dj_replica.models import BookReplica
from django.core.management import call_command
from django.db import transaction

from django_tools.replica import apply
from django_tools.replica import messages as events
from django_tools.replica.models import ReplicaState, Tombstone

pytestmark = pytest.mark.django_db


def version() -> int:
    state = ReplicaState.objects.filter(cqrs_id="book").first()
    return state.version if state else 0


def test_deleted_sync_replica_leaves_tombstones_and_bumps_the_version(
    replica_row, instance_data, monkeypatch
):
    for pk in (1, 2, 3):
        replica_row(pk, revision=4)
    before = version()
    monkeypatch.setattr(sys, "stdin", io.StringIO("book,2026-01-01\n[1, 2]\n"))
    call_command("cqrs_deleted_sync_replica")
    assert list(BookReplica.objects.values_list("pk", flat=True)) == [3]
    assert dict(Tombstone.objects.values_list("instance_pk", "cqrs_revision")) == {"1": 5, "2": 5}
    assert version() > before
    late = events.Event("book", SignalType.SAVE, 1, 4, instance_data(1, 4))
    with transaction.atomic():
        assert apply.apply_changes([apply.prepare(late)]) == ["deleted_before"]


def test_bulk_load_with_clear_starts_from_nothing(replica_row, instance_data, tmp_path):
    replica_row(1, revision=2)
    Tombstone.objects.create(cqrs_id="book", instance_pk="2", cqrs_revision=7,
                             deleted_at="2026-01-01T00:00:00Z")  # fmt: skip
    before = version()
    dump = tmp_path / "book.dump"
    rows = [instance_data(1, 0, title="reloaded"), instance_data(2, 0, title="back")]
    dump.write_text("book\n" + "".join(json.dumps(row) + "\n" for row in rows))
    call_command("cqrs_bulk_load", "--input", str(dump), "--clear", "1")
    assert dict(BookReplica.objects.values_list("pk", "title")) == {1: "reloaded", 2: "back"}
    assert not Tombstone.objects.filter(cqrs_id="book").exists()
    assert version() > before
