import random

import pytest

from django_tools.replica.policy import RetryPolicy, format_seconds

# No database in it (the retry policy's arithmetic): CI runs it on SQLite only.
pytestmark = pytest.mark.any_database


def test_default_schedule_doubles_up_to_the_cap():
    policy = RetryPolicy()
    assert policy.schedule() == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
    assert policy.tiers() == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]


def test_jittered_delay_stays_within_its_tier():
    policy = RetryPolicy(base=2, factor=3, cap=50, jitter=0.25)
    rng = random.Random(1)
    for retry in range(1, 6):
        tier = policy.tier(retry)
        delays = [policy.delay(retry, rng) for _ in range(200)]
        assert all(tier * 0.75 <= d <= tier for d in delays)
        assert max(delays) - min(delays) > tier * 0.1  # it does spread


def test_no_jitter_means_exactly_the_tier():
    assert RetryPolicy(base=0.5, jitter=0).delay(3) == 2.0


@pytest.mark.parametrize(
    "kwargs",
    [{"base": 0}, {"factor": 0.5}, {"cap": 0.1, "base": 1}, {"jitter": 1}, {"max_retries": -1}],
)
def test_nonsense_is_refused(kwargs):
    with pytest.raises(ValueError, match="invalid retry policy"):
        RetryPolicy(**kwargs)


def test_from_settings():
    policy = RetryPolicy.from_settings(
        {
            "CQRS_MAX_RETRIES": 3,
            "retry_base": 0.5,
            "retry_factor": 3,
            "retry_cap": 4,
            "retry_jitter": 0,
        }
    )
    assert policy.schedule() == [0.5, 1.5, 4]
    assert RetryPolicy.from_settings({}) == RetryPolicy()


def test_queue_name_suffixes():
    assert [format_seconds(s) for s in (1, 0.25, 300.0)] == ["1s", "0.25s", "300s"]
