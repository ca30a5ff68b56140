"""One reconnect backoff for every long-lived broker session (the relays, the consumer).

A session (connect, then work until something breaks) is run again and again until `stop` is
set, by tenacity's `Retrying`: between failed attempts the pause grows exponentially with jitter
(`wait_exponential_jitter`: 0.5 s, 1 s, 2 s, 4 s, then `maximum`, each plus up to `jitter`).
A session calls `connected()` once it is connected and working: the next fault is then retried
as quickly as the first one ever, not with the cap an earlier outage reached.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential_jitter

from django_tools.broker_permissions import describe


def keep_running(
    session: Callable[[Callable[[], None]], None],
    *,
    stop: threading.Event,
    retry_on: tuple[type[BaseException], ...],
    logger: logging.Logger,
    what: str,
    initial: float = 0.5,
    maximum: float = 5.0,
    jitter: float = 0.25,
    on_retry: Callable[[BaseException], None] | None = None,
    beat: Callable[[], None] | None = None,
) -> None:
    """Run `session(connected)` until `stop` is set; a session that raises one of `retry_on` is
    run again after the backoff, anything else propagates. A session that returns is done.
    `beat`, when given, is called about every second of the backoff (a process's heartbeat
    file shows it waiting, not stuck)."""

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception()
        if on_retry is not None:
            on_retry(exc)
        # A refused permission in one line that says which (broker_permissions).
        logger.warning("%s lost (%s); again in %.1fs", what, describe(exc), state.upcoming_sleep)

    def pause(seconds: float) -> None:
        """tenacity's sleep, cut short by `stop`, beating about every second."""
        resume = time.monotonic() + seconds
        while not stop.wait(max(0.0, min(1.0, resume - time.monotonic()))):
            if time.monotonic() >= resume:
                return
            if beat is not None:
                beat()

    retrying = Retrying(
        retry=retry_if_exception_type(retry_on),
        stop=lambda _state: stop.is_set(),
        wait=wait_exponential_jitter(multiplier=initial, max=maximum, jitter=jitter),
        sleep=pause,
        before_sleep=before_sleep,
        # Stopped while failing: done, not an error.
        retry_error_callback=lambda _state: None,
    )
    for attempt in retrying:
        with attempt:
            if stop.is_set():  # set during the pause
                return
            state = attempt.retry_state
            # Connected: the next failure counts as the first again (tenacity's wait grows with
            # the attempt number, one more each failed attempt).
            session(lambda state=state: setattr(state, "attempt_number", 1))
