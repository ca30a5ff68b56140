"""django-cqrs's retry programming model kept: a replica model's `should_retry_cqrs` and
`get_cqrs_retry_delay`, and the `CQRS['replica']` retry settings, honoured through the broker's
retry tiers (or named by a system check when they cannot be)."""

import math
import time
from unittest import mock

import pytest
from dj_cqrs.mixins import RawReplicaMixin
from dj_replica.models import PICKY_DELAY, RETRY_HOOK_CALLS, BookPicky, BookReplica
from django.db import OperationalError

from django_tools.connectivity import amqp_channel
from django_tools.replica import consumer as consumer_module
from django_tools.replica import hooks, stock_retry
from django_tools.replica.checks import check_replica
from django_tools.replica.failures import (
    EXHAUSTED,
    PERMANENT,
    REFUSED,
    FailureReport,
    Retry,
    SetAside,
    classify,
)
from django_tools.replica.messages import InvalidMessage
from django_tools.replica.policy import RetryPolicy
from django_tools.replica.transport import worker_limits
from django_tools.testing import FAST_POLICY, queue_depth, wait_until

LOCKED = OperationalError("database is locked")
FINAL = OperationalError("final: the row it needs will never come")


def asked_hooks() -> list[tuple]:
    return list(RETRY_HOOK_CALLS)


@pytest.fixture(autouse=True)
def fresh():
    hooks.forget_hooks()
    RETRY_HOOK_CALLS.clear()
    PICKY_DELAY["seconds"] = 1
    yield
    hooks.forget_hooks()


# --- the tier an asked wait goes through ----------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "tier"),
    [(0, 0.3), (0.3, 0.3), (0.31, 0.6), (0.6, 0.6), (1, 1.2), (1.2, 1.2), (5, 1.2), (1e9, 1.2)],
)
def test_an_asked_wait_is_rounded_up_to_a_tier_and_never_past_the_longest(asked, tier):
    assert FAST_POLICY.tiers() == [0.3, 0.6, 1.2]
    assert FAST_POLICY.tier_at_least(asked) == tier


def test_the_default_tiers_round_up_too():
    policy = RetryPolicy()
    assert [policy.tier_at_least(s) for s in (2, 3, 100, 299, 301)] == [2, 4, 128, 300, 300]


# --- which hooks a model overrides: worked out once per model ----------------------------------


def test_a_model_with_django_cqrs_own_hooks_has_none_of_its_own():
    assert hooks.retry_hooks(BookReplica) == hooks.NO_RETRY_HOOKS
    assert hooks.retry_hooks(None) is hooks.NO_RETRY_HOOKS


def test_a_models_own_hooks_are_found_once():
    found = hooks.retry_hooks(BookPicky)
    assert found.should_retry is BookPicky.should_retry_cqrs
    assert found.retry_delay is BookPicky.get_cqrs_retry_delay
    with mock.patch.object(hooks, "_overridden") as look:
        assert hooks.retry_hooks(BookPicky) is found  # not looked at again, per message
    look.assert_not_called()


def test_a_class_method_hook_is_found_and_the_other_left_to_the_policy():
    class ClassHooked(RawReplicaMixin):  # not registered: the registry stays the suite's
        @classmethod
        def should_retry_cqrs(cls, current_retry, exception=None):
            return current_retry < 1

    found = hooks.retry_hooks(ClassHooked)
    assert found.should_retry(0, LOCKED) and not found.should_retry(1, LOCKED)
    assert found.retry_delay is None


# --- classify with the model's hooks ----------------------------------------------------------


def test_should_retry_false_dead_letters_at_once():
    assert classify(FINAL, 0, FAST_POLICY, model=BookPicky) == SetAside(REFUSED)
    assert asked_hooks() == [("should_retry_cqrs", 0, str(FINAL))]


def test_should_retry_true_goes_on_with_the_policy_and_its_limit():
    assert classify(LOCKED, 1, FAST_POLICY, model=BookPicky).retry == 2
    # The model's yes never goes past CQRS_MAX_RETRIES: the message still reaches the DLQ,
    # as exhausted (not asked then: a hook calling django-cqrs's would say no, as refused).
    assert classify(LOCKED, 3, FAST_POLICY, model=BookPicky) == SetAside(EXHAUSTED)
    assert classify(FINAL, 3, FAST_POLICY, model=BookPicky) == SetAside(EXHAUSTED)
    assert [call[:2] for call in asked_hooks()] == [
        ("should_retry_cqrs", 1),
        ("get_cqrs_retry_delay", 1),
    ]


def test_the_hooks_are_not_asked_about_what_can_never_be_applied():
    assert classify(InvalidMessage("x"), 0, FAST_POLICY, model=BookPicky) == SetAside(PERMANENT)
    assert classify(TypeError("x"), 0, FAST_POLICY, validating=True, model=BookPicky) == SetAside(
        PERMANENT
    )
    assert asked_hooks() == []


@pytest.mark.parametrize(("asked", "tier"), [(1, 1.2), (0.5, 0.6), (0, 0.3), (3600, 1.2)])
def test_the_models_wait_picks_the_tier_at_or_above_it(asked, tier):
    PICKY_DELAY["seconds"] = asked
    assert classify(LOCKED, 2, FAST_POLICY, model=BookPicky) == Retry(3, tier, tier)
    assert asked_hooks() == [
        ("should_retry_cqrs", 2, str(LOCKED)),
        ("get_cqrs_retry_delay", 2),  # the retries done so far, as django-cqrs passes it
    ]


def test_without_the_models_wait_the_policy_jitters_within_its_own_tier():
    decision = classify(LOCKED, 0, FAST_POLICY, model=BookReplica)
    assert decision.tier == 0.3 and 0.3 * 0.8 <= decision.delay <= 0.3


@pytest.mark.parametrize("answer", [-1, "soon", None, math.nan, True])
def test_a_nonsense_wait_leaves_it_to_the_policy(answer, caplog):
    PICKY_DELAY["seconds"] = answer
    decision = classify(LOCKED, 1, FAST_POLICY, model=BookPicky)
    assert decision.tier == FAST_POLICY.tier(2)
    assert "get_cqrs_retry_delay(1) returned" in caplog.text


def test_a_hook_that_raises_leaves_it_to_the_policy(caplog):
    with mock.patch.object(BookPicky, "should_retry_cqrs", staticmethod(lambda r, e: 1 / 0)):
        hooks.forget_hooks()
        assert classify(LOCKED, 0, FAST_POLICY, model=BookPicky).retry == 1
    assert "should_retry_cqrs(0" in caplog.text


# --- django-cqrs's settings ---------------------------------------------------------------


def replica(**stock) -> dict:
    return {
        "CQRS_MAX_RETRIES": 3,
        "retry_base": 1.0,
        "retry_factor": 2.0,
        "retry_cap": 300.0,
        "retry_jitter": 0.0,
        "prefetch": 500,
        "batch_size": 250,
        **stock,
    }


def test_django_cqrs_defaults_filled_in_change_nothing():
    filled = replica(CQRS_RETRY_DELAY=2, delay_queue_max_size=1000)  # what its ready() adds
    assert RetryPolicy.from_settings(filled) == RetryPolicy.from_settings(replica())
    assert stock_retry.prefetch_cap(filled) is None
    assert worker_limits(filled, max_message_bytes=1024) == (500, 250)


def test_what_the_service_wrote_counts_even_when_it_equals_django_cqrs_default(monkeypatch):
    written = replica(CQRS_RETRY_DELAY=2)
    monkeypatch.setattr(stock_retry, "_written", None)
    stock_retry.remember({"replica": written})
    written["delay_queue_max_size"] = 1000  # django-cqrs's ready(), afterwards
    assert stock_retry.written(written) == {"CQRS_RETRY_DELAY": 2}
    assert RetryPolicy.from_settings(written).schedule() == [2, 2, 2]


def test_cqrs_retry_delay_is_a_constant_wait_through_one_tier():
    policy = RetryPolicy.from_settings(replica(CQRS_RETRY_DELAY=5))
    assert policy.schedule() == [5, 5, 5] and policy.tiers() == [5]
    assert policy.max_retries == 3
    # 0 (django-cqrs: at once) still goes through a delay queue on the broker.
    assert RetryPolicy.from_settings(replica(CQRS_RETRY_DELAY=0)).tiers() == [0.1]


def test_delay_queue_max_size_bounds_the_prefetch_as_django_cqrs_does():
    assert worker_limits(replica(delay_queue_max_size=99), max_message_bytes=1024) == (100, 100)
    # Never raised above this replica's own prefetch, nor past its bytes.
    assert worker_limits(replica(delay_queue_max_size=5000), max_message_bytes=1024) == (500, 250)
    assert worker_limits(replica(delay_queue_max_size=None), max_message_bytes=1024) == (500, 250)


RETRY_WARNINGS = {f"django_tools.replica.W00{n}" for n in (4, 5, 6, 7)}


def checked(settings, **stock) -> dict:
    settings.CQRS = {**settings.CQRS, "replica": replica(**stock)}
    return {p.id: p for p in check_replica() if p.id in RETRY_WARNINGS}


def test_the_test_settings_raise_no_retry_warning(settings):
    assert not RETRY_WARNINGS & {p.id for p in check_replica()}


def test_what_cannot_be_honoured_is_named_with_what_to_use(settings):
    found = checked(settings, CQRS_MAX_RETRIES=None, delay_queue_max_size=None)
    assert "CQRS_MAX_RETRIES=None" in found["django_tools.replica.W004"].msg
    assert "set CQRS_MAX_RETRIES" in found["django_tools.replica.W004"].hint
    assert "CQRS_PREFETCH" in found["django_tools.replica.W005"].hint
    found = checked(settings, dead_message_ttl=864000)
    assert "cqrs_dead_letters purge" in found["django_tools.replica.W007"].hint
    found = checked(settings, CQRS_RETRY_DELAY=5, retry_cap=60.0)
    assert "retry_cap=60.0" in found["django_tools.replica.W006"].msg
    assert not checked(settings, CQRS_RETRY_DELAY=5, delay_queue_max_size=10)


# --- against the real broker ----------------------------------------------------------------

UPDATED = "2026-01-01 00:00:00+00:00"


def picky(pk: int) -> dict:
    return {"id": pk, "title": f"Book {pk}", "cqrs_revision": 0, "cqrs_updated": UPDATED}


def take_dead_letter(url: str, topology) -> FailureReport:
    with amqp_channel(url) as channel:
        method, properties, body = channel.basic_get(topology.dead_letter_queue, auto_ack=True)
    assert method is not None, "no dead letter"
    return FailureReport.read(properties, method.routing_key, body)


@pytest.mark.django_db(transaction=True)
def test_a_model_refusing_the_retry_has_its_message_dead_lettered_at_once(
    consumers, publish, event_payload, rabbitmq_url, topology
):
    def failing(changes):
        raise FINAL

    with mock.patch.object(consumer_module, "apply_changes", failing):
        consumers.start()
        publish(event_payload("SAVE", picky(1), cqrs_id="book_picky"), "book_picky")
        wait_until(
            lambda: queue_depth(rabbitmq_url, topology.dead_letter_queue) == 1,
            what="the dead letter",
        )
    report = take_dead_letter(rabbitmq_url, topology)
    assert report.dead_reason == REFUSED
    assert report.retries == 0 and report.payload["instance_pk"] == 1
    assert report.error == str(FINAL)
    assert consumers.stats("retried") == 0
    assert asked_hooks() == [("should_retry_cqrs", 0, str(FINAL))]


@pytest.mark.django_db(transaction=True)
def test_the_models_wait_sends_the_retry_through_the_tier_at_or_above_it(
    consumers, publish, event_payload, topology
):
    real_apply, real_validate = consumer_module.apply_changes, consumer_module.validate
    seen: list[tuple[float, list | None]] = []  # each delivery: when, and its x-death

    def watched(delivery):
        headers = (delivery.properties.headers if delivery.properties else None) or {}
        seen.append((time.monotonic(), headers.get("x-death")))
        return real_validate(delivery)

    def flaky(changes):
        if len(seen) == 1:
            raise LOCKED
        return real_apply(changes)

    # 1 s asked: the 1.2 s tier, where the policy would send a first retry through 0.3 s.
    assert topology.policy.tier(1) == 0.3
    with (
        mock.patch.object(consumer_module, "validate", watched),
        mock.patch.object(consumer_module, "apply_changes", flaky),
    ):
        consumers.start()
        publish(event_payload("SAVE", picky(2), cqrs_id="book_picky"), "book_picky")
        wait_until(lambda: BookPicky.objects.filter(pk=2).exists(), what="the retried save")

    assert len(seen) == 2 and seen[0][1] is None
    (death,) = seen[1][1]
    assert text(death["queue"]) == topology.retry_queue(1.2) == f"{topology.queue}.retry.1.2s"
    assert text(death["reason"]) == "expired"
    waited = seen[1][0] - seen[0][0]
    assert 1.2 <= waited < 1.2 + 1.0, waited  # the tier's whole wait: rounded up, no jitter
    assert asked_hooks() == [
        ("should_retry_cqrs", 0, str(LOCKED)),
        ("get_cqrs_retry_delay", 0),
    ]
    print(f"\nasked 1 s, went through the 1.2 s tier, waited {waited:.3f}s")


def text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
