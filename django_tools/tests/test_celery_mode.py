"""REPLICATION_MODE=celery on the replica: the `replica.apply_event` task applies a change by the
same rules as the consumer, retries transient failures with Celery and this replica's backoff,
and dead-letters what cannot be applied, with the same headers."""

from unittest import mock

import orjson
import pytest
from celery.exceptions import Retry
from dj_replica.models import BookReplica
from django.db import OperationalError

from django_tools.connectivity import amqp_channel
from django_tools.replica import apply as apply_module
from django_tools.replica import dead_letters
from django_tools.replica.tasks import apply_event
from django_tools.testing import queue_depth, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def body(event_payload, *args, **kwargs) -> str:
    return orjson.dumps(event_payload(*args, **kwargs)).decode()


def test_a_change_is_applied_and_a_duplicate_ignored(event_payload, instance_data, topology):
    assert (
        apply_event.apply(args=[body(event_payload, "SAVE", instance_data(1, 0))]).get()
        == "applied"
    )
    assert (
        apply_event.apply(args=[body(event_payload, "SAVE", instance_data(1, 0))]).get()
        == "duplicate"
    )
    assert BookReplica.objects.get(pk=1).cqrs_revision == 0


def test_a_poison_message_goes_to_the_same_dead_letter_queue(rabbitmq_url, topology):
    assert apply_event.apply(args=['{"not": "a payload"}']).get() == "dead_lettered"
    wait_until(lambda: queue_depth(rabbitmq_url, topology.dead_letter_queue) == 1)
    with amqp_channel(rabbitmq_url) as channel:
        (letter,) = list(dead_letters.read(channel, topology))
    assert letter.report.dead_reason == "permanent"
    assert letter.report.error_class.endswith("InvalidMessage")
    assert letter.report.routing_key == "celery"


def test_a_transient_failure_is_retried_with_the_backoff(event_payload, instance_data, topology):
    with (
        mock.patch.object(apply_module, "_apply_model", side_effect=OperationalError("locked")),
        mock.patch.object(apply_event, "retry", side_effect=Retry()) as retry,
        pytest.raises(Retry),
    ):
        apply_event.apply(args=[body(event_payload, "SAVE", instance_data(2, 0))], throw=True)
    countdown = retry.call_args.kwargs["countdown"]
    policy = topology.policy
    assert policy.tier(1) * (1 - policy.jitter) <= countdown <= policy.tier(1)


def test_after_the_last_retry_it_is_dead_lettered(
    event_payload, instance_data, rabbitmq_url, topology
):
    task = apply_event
    with mock.patch.object(apply_module, "_apply_model", side_effect=OperationalError("down")):
        result = task.apply(
            args=[body(event_payload, "SAVE", instance_data(3, 0))],
            retries=topology.policy.max_retries,
        ).get()
    assert result == "dead_lettered"
    wait_until(lambda: queue_depth(rabbitmq_url, topology.dead_letter_queue) == 1)
    with amqp_channel(rabbitmq_url) as channel:
        (letter,) = list(dead_letters.read(channel, topology))
    assert letter.report.dead_reason == "retries-exhausted"
    assert letter.report.retries == topology.policy.max_retries


@pytest.mark.parametrize(
    "overrides", [{"created_at": 123}, {"isbn": {"a": 1}}, {"copies": 1.9}, {"id": True}]
)
def test_a_malformed_event_is_dead_lettered_not_dropped(
    overrides, event_payload, instance_data, rabbitmq_url, topology
):
    """Only PermanentFailure was caught around decoding: a TypeError (`created_at: 123`) failed
    the task, Celery acknowledged it, and the change was gone without a trace."""
    result = apply_event.apply(args=[body(event_payload, "SAVE", instance_data(4, 0, **overrides))])
    assert result.get() == "dead_lettered"
    wait_until(lambda: queue_depth(rabbitmq_url, topology.dead_letter_queue) == 1)
    with amqp_channel(rabbitmq_url) as channel:
        (letter,) = list(dead_letters.read(channel, topology))
    assert letter.report.dead_reason == "permanent"
    assert not BookReplica.objects.filter(pk=4).exists()


def test_an_unexpected_error_while_validating_is_permanent_in_both_modes(topology):
    """One classifier for both modes: the same TypeError from validation is a dead letter in
    cqrs mode too, not ~20 minutes of retries."""
    from django_tools.replica.failures import SetAside, classify

    decision = classify(TypeError("boom"), 0, topology.policy, validating=True)
    assert decision == SetAside("permanent")
    assert classify(TypeError("boom"), 0, topology.policy).retry == 1


PICKY = {"id": 7, "title": "Picky", "cqrs_revision": 0, "cqrs_updated": "2026-01-01 00:00:00+00:00"}


@pytest.fixture
def picky_hooks():
    from dj_replica.models import PICKY_DELAY, RETRY_HOOK_CALLS

    from django_tools.replica.hooks import forget_hooks

    forget_hooks()
    RETRY_HOOK_CALLS.clear()
    PICKY_DELAY["seconds"] = 1
    yield RETRY_HOOK_CALLS
    forget_hooks()


def test_the_models_retry_hooks_are_asked_in_celery_mode_too(
    event_payload, rabbitmq_url, topology, picky_hooks
):
    """The same classify: the model's wait is the tier at or above it (the countdown), its
    refusal a dead letter at once."""
    payload = body(event_payload, "SAVE", PICKY, cqrs_id="book_picky")
    with (
        mock.patch.object(apply_module, "_apply_model", side_effect=OperationalError("locked")),
        mock.patch.object(apply_event, "retry", side_effect=Retry()) as retry,
        pytest.raises(Retry),
    ):
        apply_event.apply(args=[payload], throw=True)
    assert retry.call_args.kwargs["countdown"] == 1.2  # asked 1 s: FAST_POLICY's 1.2 s tier

    final = OperationalError("final: never")
    with mock.patch.object(apply_module, "_apply_model", side_effect=final):
        assert apply_event.apply(args=[payload]).get() == "dead_lettered"
    wait_until(lambda: queue_depth(rabbitmq_url, topology.dead_letter_queue) == 1)
    with amqp_channel(rabbitmq_url) as channel:
        (letter,) = list(dead_letters.read(channel, topology))
    assert letter.report.dead_reason == "model-refused-retry"
    assert [call[0] for call in picky_hooks] == [
        "should_retry_cqrs",
        "get_cqrs_retry_delay",
        "should_retry_cqrs",
    ]


def test_a_letter_retried_as_a_task_that_dies_again_keeps_its_identity(
    rabbitmq_url, topology, settings, event_payload, instance_data
):
    """REPLICATION_MODE=celery: the retried letter is a new task; dying again, it is the same
    letter (identity, first failure, the master's signature), not a new one."""
    from django_tools import signing

    settings.REPLICATION_MODE = "celery"
    settings.CQRS_SIGNING_KEYS = ("k" * 32,)
    poison = body(event_payload, "SAVE", instance_data(5, 0, copies=-1))
    headers = signing.signed_headers(poison.encode(), {})
    assert apply_event.apply(args=[poison], headers=headers).get() == "dead_lettered"
    wait_until(lambda: queue_depth(rabbitmq_url, topology.dead_letter_queue) == 1)
    with amqp_channel(rabbitmq_url) as channel:
        (first,) = list(dead_letters.read(channel, topology))
    assert first.report.error_class.endswith("InvalidData")

    with mock.patch("celery.current_app.send_task") as send_task:
        outcome = dead_letters.act_on(topology, dead_letters.RETRY, [first.id])
    assert outcome.done == [first.id]
    sent = send_task.call_args.kwargs
    assert apply_event.apply(args=sent["args"], headers=sent["headers"]).get() == "dead_lettered"
    wait_until(lambda: queue_depth(rabbitmq_url, topology.dead_letter_queue) == 1)
    with amqp_channel(rabbitmq_url) as channel:
        (again,) = list(dead_letters.read(channel, topology))
    assert again.id == first.id
    assert again.report.first_failure == first.report.first_failure
    assert again.report.last_failure > first.report.last_failure
    assert again.report.error_class.endswith("InvalidData")  # not unsigned: the signature kept
