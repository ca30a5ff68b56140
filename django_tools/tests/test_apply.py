"""Events → rows (django_tools.replica.apply and .messages) on the real database."""

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from dj_cqrs.constants import SignalType
from dj_replica.models import BookReplica
from django.db import transaction

from django_tools.replica import apply
from django_tools.replica import messages as events
from django_tools.replica.models import Tombstone

pytestmark = pytest.mark.django_db


def event(signal_type, data, cqrs_id="book"):
    return events.Event(cqrs_id, signal_type, data.get("id"), data["cqrs_revision"], data)


def save(data):
    return event(SignalType.SAVE, data)


def delete(pk, revision):
    return event(SignalType.DELETE, {"id": pk, "cqrs_revision": revision, "cqrs_updated": "x"})


def run(*evs) -> list[str]:
    with transaction.atomic():
        return apply.apply_changes([apply.prepare(e) for e in evs])


def row(pk):
    return BookReplica.objects.filter(pk=pk).values("cqrs_revision", "title").first()


def test_save_creates_then_only_newer_revisions_update(instance_data):
    assert run(save(instance_data(1, 0, title="v0"))) == ["applied"]
    assert run(save(instance_data(1, 2, title="v2"))) == ["applied"]
    assert run(save(instance_data(1, 2, title="v2 again"))) == ["duplicate"]
    assert run(save(instance_data(1, 1, title="v1 late"))) == ["stale"]
    assert row(1) == {"cqrs_revision": 2, "title": "v2"}


def test_the_row_holds_the_master_values(instance_data):
    run(save(instance_data(5, 3, price=19.9, copies=7, in_print=False, summary="d")))
    replica = BookReplica.objects.get(pk=5)
    assert str(replica.price) == "19.90"
    assert (replica.copies, replica.in_print, replica.summary, replica.cqrs_revision) == (
        7,
        False,
        "d",
        3,
    )
    assert replica.created_at == datetime(2026, 1, 1, tzinfo=UTC)


def test_delete_leaves_a_tombstone_that_stops_stale_saves(instance_data):
    run(save(instance_data(2, 0)), save(instance_data(2, 1)))
    assert run(delete(2, 2)) == ["applied"]
    assert row(2) is None
    assert Tombstone.objects.get(cqrs_id="book", instance_pk="2").cqrs_revision == 2
    # A redelivered or late save must not bring it back, nor may a repeated delete matter.
    assert run(save(instance_data(2, 1)), save(instance_data(2, 2)), delete(2, 2)) == [
        "deleted_before",
        "deleted_before",
        "duplicate",
    ]
    assert row(2) is None


def test_a_delete_before_its_saves_still_wins(instance_data):
    assert run(delete(3, 4), save(instance_data(3, 0)), save(instance_data(3, 3))) == [
        "applied",
        "deleted_before",
        "deleted_before",
    ]
    assert row(3) is None


def test_a_newer_save_than_the_tombstone_revives_the_row(instance_data):
    run(delete(4, 1))
    assert run(save(instance_data(4, 5, title="back"))) == ["applied"]
    assert row(4) == {"cqrs_revision": 5, "title": "back"}
    assert not Tombstone.objects.filter(instance_pk="4").exists()


def test_sync_repairs_at_the_same_revision_but_never_goes_back(instance_data):
    run(save(instance_data(6, 3, title="right")))
    BookReplica.objects.filter(pk=6).update(title="drifted")
    assert run(event(SignalType.SYNC, instance_data(6, 3, title="right"))) == ["applied"]
    assert row(6)["title"] == "right"
    assert run(event(SignalType.SYNC, instance_data(6, 2, title="old"))) == ["stale"]


def test_one_batch_ends_in_the_state_of_its_highest_revisions(instance_data):
    outcomes = run(
        save(instance_data(7, 1, title="b")),
        save(instance_data(8, 0, title="x")),
        save(instance_data(7, 0, title="a")),
        save(instance_data(7, 2, title="c")),
        delete(8, 1),
        save(instance_data(8, 0, title="x")),
    )
    assert outcomes == ["applied", "applied", "stale", "applied", "applied", "deleted_before"]
    assert row(7) == {"cqrs_revision": 2, "title": "c"}
    assert row(8) is None


def test_the_stock_entry_points_obey_the_same_rules(instance_data):
    BookReplica.cqrs_save(instance_data(9, 1, title="one"))
    BookReplica.cqrs_delete({"id": 9, "cqrs_revision": 2, "cqrs_updated": "x"})
    BookReplica.cqrs_save(instance_data(9, 1, title="one"))
    assert row(9) is None


@pytest.mark.parametrize(
    "overrides,reason",
    [
        ({"price": "abc"}, "price"),
        ({"price": "-1.00"}, "price"),
        ({"price": "1.234"}, "price"),
        ({"copies": -3}, "copies"),
        ({"isbn": ""}, "isbn"),
        ({"isbn": "x" * 65}, "isbn"),
        ({"created_at": "yesterday"}, "created_at"),
        ({"in_print": "maybe"}, "in_print"),
        ({"id": "seven"}, "id"),
    ],
)
def test_invalid_data_is_a_permanent_failure(instance_data, overrides, reason):
    with pytest.raises(events.InvalidData, match=reason):
        apply.prepare(save(instance_data(10, 0, **overrides)))


@pytest.mark.parametrize(
    "overrides,reason",
    [
        ({"isbn": {"a": 1}}, "isbn: expected a string, got JSON object"),
        ({"title": 42}, "title: expected a string, got JSON number"),
        ({"copies": 1.9}, "copies: expected an integer, got JSON number"),
        ({"copies": "3"}, "copies: expected an integer, got JSON string"),
        ({"id": True}, "id: expected an integer, got JSON boolean"),
        ({"in_print": 1}, "in_print: expected a boolean, got JSON number"),
        ({"price": True}, "price: expected a string or an integer or a number, got JSON boolean"),
        ({"created_at": 123}, "created_at: expected a string, got JSON number"),
        ({"summary": ["x"]}, "summary: expected a string, got JSON array"),
    ],
)
def test_a_value_of_the_wrong_json_type_is_refused_not_coerced(instance_data, overrides, reason):
    """Django's to_python would store str({"a": 1}), int(1.9) == 1, int(True) == 1."""
    with pytest.raises(events.InvalidData, match=reason.replace("(", r"\(")):
        apply.prepare(save(instance_data(10, 0, **overrides)))


def test_a_delete_with_a_key_of_the_wrong_type_is_refused():
    with pytest.raises(events.InvalidData, match="id: expected an integer, got JSON boolean"):
        apply.prepare(
            event(SignalType.DELETE, {"id": True, "cqrs_revision": 1, "cqrs_updated": "x"})
        )


def test_missing_required_fields_are_named(instance_data):
    data = instance_data(11, 0)
    del data["title"], data["price"]
    with pytest.raises(events.InvalidData, match="missing fields: price, title"):
        apply.prepare(save(data))


def test_an_unknown_cqrs_id_is_a_permanent_failure(instance_data):
    with pytest.raises(events.UnknownCqrsId, match="order"):
        apply.prepare(event(SignalType.SAVE, instance_data(1), cqrs_id="order"))


def envelope(**overrides):
    body = {
        "signal_type": "SAVE",
        "cqrs_id": "book",
        "instance_pk": 1,
        "instance_data": {"id": 1, "cqrs_revision": 0, "cqrs_updated": "2026-01-01 00:00:00+00:00"},
        "expires": None,
    }
    body.update(overrides)
    return orjson.dumps(body)


@pytest.mark.parametrize(
    "body,message",
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "JSON list"),
        (b'{"cqrs_id": "book"}', "lacks instance_pk, signal_type, instance_data"),
        (envelope(signal_type="UPSERT"), "signal_type"),
        (envelope(instance_data=[]), "not an object"),
        (envelope(instance_data={"id": 1, "cqrs_revision": "2", "cqrs_updated": "x"}), "revision"),
        (envelope(instance_data={"id": 1, "cqrs_revision": -1, "cqrs_updated": "x"}), "revision"),
        (envelope(instance_data={"id": 1, "cqrs_revision": 0}), "cqrs_updated"),
        (envelope(expires="someday"), "expires"),
    ],
)
def test_malformed_messages_are_invalid(body, message):
    with pytest.raises(events.InvalidMessage, match=message):
        events.decode(body)


def test_expired_messages_are_refused_and_future_ones_accepted():
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    with pytest.raises(events.ExpiredMessage):
        events.decode(envelope(expires=past))
    future = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0).isoformat()
    assert events.decode(envelope(expires=future)).revision == 0
