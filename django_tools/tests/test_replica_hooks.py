"""django-cqrs's replica programming model is kept: a model that uses CQRS_MAPPING,
CQRS_CUSTOM_SERIALIZATION, its own cqrs_save / cqrs_create / cqrs_update / cqrs_delete, CQRS_META or
signal receivers is applied through them — still idempotent, revision-checked and tombstone-safe,
in batches — while a model that uses none keeps the bulk path. The fast path wrote rows with a
prebuilt INSERT … ON CONFLICT and silently ignored every one of these hooks."""

import time

import pytest
from dj_cqrs.constants import SignalType
from dj_replica.models import HOOK_CALLS, AuthorCustom, AuthorHooked, AuthorMapped, BookReplica
from django.db import transaction

from django_tools.replica import apply
from django_tools.replica import messages as events
from django_tools.replica.models import Tombstone

pytestmark = pytest.mark.django_db

UPDATED = "2026-01-01 00:00:00+00:00"


def event(cqrs_id, signal_type, data, meta=None, previous=None):
    return events.Event(
        cqrs_id, signal_type, data.get("id"), data["cqrs_revision"], data, meta=meta,
        previous_data=previous,
    )  # fmt: skip


def run(*evs) -> list[str]:
    with transaction.atomic():
        return apply.apply_changes([apply.prepare(e) for e in evs])


def mapped(pk, revision, name="Ana Lima", books=3):
    data = {"id": pk, "name": name, "books": books}
    return {**data, "cqrs_revision": revision, "cqrs_updated": UPDATED}


def test_which_models_use_hooks_and_which_are_written_in_bulk():
    assert apply.hooks_of(BookReplica) == ()
    assert apply.hooks_of(AuthorMapped) == ("CQRS_MAPPING",)
    assert apply.hooks_of(AuthorCustom) == (
        "CQRS_CUSTOM_SERIALIZATION",
        "cqrs_create",
        "cqrs_update",
    )
    assert apply.hooks_of(AuthorHooked) == (
        "cqrs_save", "cqrs_delete", "post_save receiver", "post_delete receiver",
    )  # fmt: skip


def test_cqrs_mapping_renames_fields_and_rules_still_hold():
    save = SignalType.SAVE
    assert run(event("author_mapped", save, mapped(1, 0)),
               event("author_mapped", save, mapped(1, 1, name="Ana B. Lima", books=4)),
               event("author_mapped", save, mapped(1, 0, name="old")),  # stale, same batch
               ) == ["applied", "applied", "stale"]  # fmt: skip
    row = AuthorMapped.objects.get(pk=1)
    assert (row.full_name, row.book_count, row.cqrs_revision) == ("Ana B. Lima", 4, 1)
    assert run(event("author_mapped", save, mapped(1, 1))) == ["duplicate"]
    delete = {"id": 1, "cqrs_revision": 2, "cqrs_updated": UPDATED}
    assert run(event("author_mapped", SignalType.DELETE, delete)) == ["applied"]
    assert not AuthorMapped.objects.exists()
    assert Tombstone.objects.get(cqrs_id="author_mapped").cqrs_revision == 2
    assert run(event("author_mapped", save, mapped(1, 1))) == ["deleted_before"]  # never undone


def test_mapped_data_is_still_validated_by_the_replica_fields():
    with pytest.raises(events.InvalidData, match="book_count: expected an integer"):
        apply.prepare(event("author_mapped", SignalType.SAVE, mapped(2, 0, books="many")))
    with pytest.raises(events.InvalidData, match="CQRS_MAPPING"):
        no_fields = {"id": 3, "cqrs_revision": 0, "cqrs_updated": UPDATED}
        apply.prepare(event("author_mapped", SignalType.SAVE, no_fields))


def custom(pk, revision, first="Rui", last="Sá", city="Porto"):
    profile = {"first": first, "last": last, "city": city}
    return {"id": pk, "profile": profile, "cqrs_revision": revision, "cqrs_updated": UPDATED}


def test_custom_serialization_goes_through_the_models_own_create_and_update():
    save = SignalType.SAVE
    outcomes = run(
        event("author_custom", save, custom(5, 0)),
        event("author_custom", save, custom(5, 2, city="Braga")),
    )
    assert outcomes == ["applied", "applied"]
    row = AuthorCustom.objects.get(pk=5)
    assert (row.full_name, row.city, row.cqrs_revision) == ("Rui Sá", "Braga", 2)
    assert run(event("author_custom", save, custom(5, 1, city="Lisboa"))) == ["stale"]
    assert AuthorCustom.objects.get(pk=5).city == "Braga"


def test_own_cqrs_save_cqrs_delete_meta_and_signal_receivers_are_called_once_per_change():
    HOOK_CALLS.clear()
    save, meta = SignalType.SAVE, {"tenant": "t1"}
    data = {"id": 7, "full_name": "Eva", "cqrs_revision": 0, "cqrs_updated": UPDATED}
    assert run(event("author_hooked", save, data, meta=meta),
               event("author_hooked", save, {**data, "full_name": "Eva M.", "cqrs_revision": 1}),
               event("author_hooked", save, data)) == ["applied", "applied", "stale"]  # fmt: skip
    assert [
        ("cqrs_save", 7, 0, meta), ("post_save", 7, 0, True),
        ("cqrs_save", 7, 1, None), ("post_save", 7, 1, False),
    ] == HOOK_CALLS  # fmt: skip
    HOOK_CALLS.clear()
    assert run(event("author_hooked", save, {**data, "cqrs_revision": 1})) == ["duplicate"]
    assert HOOK_CALLS == []  # a duplicate reaches no hook
    delete = {"id": 7, "cqrs_revision": 2, "cqrs_updated": UPDATED}
    assert run(event("author_hooked", SignalType.DELETE, delete, meta=meta)) == ["applied"]
    assert [("cqrs_delete", 7, 2, meta), ("post_delete", 7, 1, None)] == HOOK_CALLS
    assert not AuthorHooked.objects.exists()
    assert Tombstone.objects.get(cqrs_id="author_hooked").cqrs_revision == 2


def test_a_hook_that_fails_fails_the_whole_batch_so_it_is_retried():
    data = {"id": 8, "full_name": "x" * 101, "cqrs_revision": 0, "cqrs_updated": UPDATED}
    with pytest.raises(events.InvalidData, match="full_name"):  # refused before any write
        apply.prepare(event("author_hooked", SignalType.SAVE, data))

    def broken(*args, **kwargs):
        raise RuntimeError("hook down")

    original = AuthorHooked.cqrs_save
    AuthorHooked.cqrs_save = classmethod(broken)
    try:
        ok = {"id": 9, "full_name": "Ok", "cqrs_revision": 0, "cqrs_updated": UPDATED}
        change = apply.prepare(event("author_hooked", SignalType.SAVE, ok))
        with pytest.raises(RuntimeError), transaction.atomic():
            apply.apply_changes([change])
    finally:
        AuthorHooked.cqrs_save = original
    # Not logged and swallowed, as django-cqrs's manager does: nothing written, nothing lost.
    assert not AuthorHooked.objects.filter(pk=9).exists()


def test_django_cqrs_entry_points_reach_the_hooks_and_the_rules_too():
    """`Model.cqrs_save` called from outside (the stock consumer, cqrs_bulk_load) applies by
    the same rules, through the same hooks."""
    HOOK_CALLS.clear()
    data = {"id": 11, "full_name": "Ivo", "cqrs_revision": 3, "cqrs_updated": UPDATED}
    AuthorHooked.cqrs.save_instance(data)
    AuthorHooked.cqrs.save_instance({**data, "cqrs_revision": 2})  # stale: ignored
    assert AuthorHooked.objects.get(pk=11).cqrs_revision == 3
    assert [call[0] for call in HOOK_CALLS] == ["cqrs_save", "post_save"]


@pytest.mark.parametrize("count", [2000])
def test_what_each_path_costs(count):
    """Not asserted, reported: µs per change for the bulk path and for the hooks' path."""

    def book(pk):
        return {"id": pk, "isbn": f"I{pk}", "title": "T", "summary": "", "price": "1.00",
                "copies": 1, "in_print": True, "created_at": UPDATED, "updated_at": UPDATED,
                "cqrs_revision": 0, "cqrs_updated": UPDATED}  # fmt: skip

    timings = {}
    paths = (
        ("bulk", "book", book),
        ("hooks (CQRS_MAPPING)", "author_mapped", lambda pk: mapped(pk, 0)),
    )
    for name, cqrs_id, make in paths:
        evs = [event(cqrs_id, SignalType.SAVE, make(pk)) for pk in range(1, count + 1)]
        started = time.perf_counter()
        for first in range(0, count, 100):
            run(*evs[first : first + 100])
        timings[name] = (time.perf_counter() - started) / count * 1e6
    print("\n" + ", ".join(f"{name}: {us:.0f} µs per change" for name, us in timings.items()))
    assert BookReplica.objects.count() == AuthorMapped.objects.count() == count


# --- a hook's falsy return is a failure, as in django-cqrs's consumer ---------------------------


@pytest.fixture
def hooks_returning(monkeypatch):
    """Make AuthorHooked's cqrs_save / cqrs_delete return `value` (after doing their work, as a
    hook that wrote something and then reported failure would)."""

    def returning(value):
        save, delete = AuthorHooked.cqrs_save.__func__, AuthorHooked.cqrs_delete.__func__

        def falsy_save(cls, *args, **kwargs):
            save(cls, *args, **kwargs)
            return value

        def falsy_delete(cls, *args, **kwargs):
            delete(cls, *args, **kwargs)
            return value

        monkeypatch.setattr(AuthorHooked, "cqrs_save", classmethod(falsy_save))
        monkeypatch.setattr(AuthorHooked, "cqrs_delete", classmethod(falsy_delete))

    return returning


def version(cqrs_id: str) -> int | None:
    from django_tools.replica.models import ReplicaState

    return ReplicaState.objects.filter(cqrs_id=cqrs_id).values_list("version", flat=True).first()


@pytest.mark.parametrize("falsy", [None, False, 0, ""])
def test_a_falsy_return_of_cqrs_save_or_cqrs_delete_fails_the_change(hooks_returning, falsy):
    """django-cqrs's consumer acks only `if instance and exception is None`; a hook returning
    None (a `cqrs_create` that forgot its `return`) was taken as applied: acked, no row, and the
    replica's version bumped (the keys of caches on it moved on)."""
    data = {"id": 30, "full_name": "Lia", "cqrs_revision": 0, "cqrs_updated": UPDATED}
    assert run(event("author_hooked", SignalType.SAVE, data)) == ["applied"]
    before = version("author_hooked")
    hooks_returning(falsy)
    changed = {**data, "full_name": "Lia B.", "cqrs_revision": 1}
    with pytest.raises(apply.HookFailed, match=rf"cqrs_save\(\) returned {falsy!r}"):
        run(event("author_hooked", SignalType.SAVE, changed))
    delete = {"id": 30, "cqrs_revision": 2, "cqrs_updated": UPDATED}
    with pytest.raises(apply.HookFailed, match=rf"cqrs_delete\(\) returned {falsy!r}"):
        run(event("author_hooked", SignalType.DELETE, delete))
    # Nothing of either change stayed: the hook's own write rolled back with the rest.
    row = AuthorHooked.objects.get(pk=30)
    assert (row.full_name, row.cqrs_revision) == ("Lia", 0)
    assert not Tombstone.objects.filter(cqrs_id="author_hooked").exists()
    assert version("author_hooked") == before


def test_through_the_stock_entry_point_a_falsy_hook_raises_too(hooks_returning):
    """`Model.cqrs_save` called by django-cqrs's own consumer: it raises, so that consumer retries
    too (its manager would have returned None, which it also retries)."""
    hooks_returning(None)
    data = {"id": 31, "full_name": "Rui", "cqrs_revision": 0, "cqrs_updated": UPDATED}
    with pytest.raises(apply.HookFailed):
        AuthorHooked.cqrs.save_instance(data)
    assert not AuthorHooked.objects.filter(pk=31).exists()


@pytest.mark.django_db(transaction=True)
def test_the_consumer_retries_a_falsy_hook_then_dead_letters_it(
    hooks_returning, consumers, publish, event_payload, rabbitmq_url, topology
):
    """Through the real broker: retried by `failures.classify` (transient), dead-lettered as
    retries-exhausted after the last retry; no row, no version bump. A neighbour whose hook
    returns a row in the same batch is applied."""
    from django_tools.replica.failures import EXHAUSTED
    from django_tools.testing import queue_depth, wait_until

    hooks_returning(None)
    data = {"id": 40, "full_name": "Ana", "cqrs_revision": 0, "cqrs_updated": UPDATED}
    publish(event_payload("SAVE", data, cqrs_id="author_hooked"), routing_key="author_hooked")
    consumers.start()
    wait_until(
        lambda: queue_depth(rabbitmq_url, topology.dead_letter_queue) == 1,
        timeout=20,
        what="the falsy hook's message to be dead-lettered",
    )
    assert consumers.stats("retried") == topology.policy.max_retries
    assert consumers.stats("applied") == 0
    assert not AuthorHooked.objects.filter(pk=40).exists()
    assert version("author_hooked") is None
    from test_consumer import dead

    (report,) = dead(rabbitmq_url, topology)
    assert report.dead_reason == EXHAUSTED
    assert report.error_class == "django_tools.replica.hooks.HookFailed"
    assert "cqrs_save() returned None" in report.error
