"""The broker connections' own watch, against the real broker: a deadline ends a call that waits
too long, a consumer busy in the database for longer than the broker's patience keeps its
connection (and beats its heartbeat), and a reconnect's backoff beats too. (Links that die
silently, paused processes: tests/test_e2e_links.py, with the real processes.)"""

import logging
import threading
import time
from unittest import mock

import pytest
from pika.exceptions import AMQPConnectionError

from django_tools.broker import blocking_connection, node_of, set_deadline, tcp_options
from django_tools.heartbeat import Heartbeat, read
from django_tools.reconnect import keep_running
from django_tools.replica import consumer as consumer_module
from django_tools.testing import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_deadline_ends_a_wait_on_the_broker(rabbitmq_url):
    connection = blocking_connection(rabbitmq_url, heartbeat=0)
    try:
        set_deadline(connection, 1.0)
        started = time.monotonic()
        with pytest.raises(AMQPConnectionError, match="deadline passed"):
            connection.process_data_events(time_limit=10)
        assert time.monotonic() - started < 3  # the watch looks every second
    finally:
        if connection.is_open:
            connection.close()


def test_a_black_holed_node_is_skipped_within_the_connect_timeout(
    rabbitmq_url, settings, silent_node
):
    """The relay and the consumer connect node by node: one that never answers costs
    CQRS_AMQP_CONNECT_TIMEOUT (pika's defaults: 10 s for the socket, 15 s for the handshake)."""
    settings.CQRS_AMQP_CONNECT_TIMEOUT = 1.0
    cluster = f"{silent_node.url()},{rabbitmq_url}"
    started = time.monotonic()
    connection = blocking_connection(cluster)
    try:
        assert time.monotonic() - started < 3
        assert silent_node.accepted and node_of(connection, cluster) == 1
    finally:
        connection.close()


def test_the_connection_has_the_heartbeat_asked_for(rabbitmq_url, settings):
    settings.CQRS_AMQP_HEARTBEAT = 3
    connection = blocking_connection(rabbitmq_url)
    try:
        assert connection._impl.params.heartbeat == 3  # what was negotiated
        assert connection._impl.params.tcp_options == tcp_options(3)
    finally:
        connection.close()


def test_a_consumer_busy_in_the_database_longer_than_the_broker_waits_keeps_its_connection(
    settings, consumers, publish, event_payload, instance_data, tmp_path, caplog
):
    """With a 1 s heartbeat the broker drops a client it has not heard from for 2–3 s. A batch
    held 6 s in the database (a lock waited for) must not cost the consumer its connection: it
    would be applied again after a reconnect, and its worker would look hung."""
    settings.CQRS_AMQP_HEARTBEAT = 1
    real_apply = consumer_module.apply_changes
    calls = []

    def slow(changes):
        calls.append(len(changes))
        time.sleep(6)
        return real_apply(changes)

    beats = tmp_path / "worker.json"
    ages: list[float] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.5):
            pulse = read(beats)
            if pulse is not None:
                ages.append(pulse.age)

    sampler = threading.Thread(target=sample, daemon=True)
    with (
        caplog.at_level(logging.WARNING, logger="django_tools.replica"),
        mock.patch.object(consumer_module, "apply_changes", slow),
    ):
        consumers.start(heartbeat=Heartbeat(beats))
        publish(event_payload("SAVE", instance_data(1, 0)))
        wait_until(lambda: calls, what="the batch in the database")
        sampler.start()
        wait_until(lambda: consumers.stats("applied") == 1, timeout=20, what="the slow batch")
        sampling.set()
    assert calls == [1], "applied more than once: the broker dropped the consumer"
    assert "AMQP connection lost" not in caplog.text
    assert ages and max(ages) < 3, f"the worker's heartbeat went stale while busy: {ages}"


def test_a_reconnect_backoff_beats():
    stop, beats, attempts = threading.Event(), [], []

    def session(connected) -> None:
        attempts.append(time.monotonic())
        if len(attempts) >= 3:
            stop.set()
            return
        raise ConnectionError("broker gone")

    keep_running(
        session, stop=stop, retry_on=(ConnectionError,), logger=logging.getLogger("test"),
        what="test link", initial=2.5, maximum=2.5, jitter=0, beat=lambda: beats.append(1),
    )  # fmt: skip
    assert len(attempts) == 3
    assert len(beats) >= 3  # a pause of 2.5 s, then 5 s: one beat a second


def test_a_session_that_got_connected_starts_the_backoff_again(caplog):
    """Each failure doubles the pause; one that comes after `connected()` waits the first pause
    again, and a failure once `stop` is set ends the run without raising."""
    stop, attempts = threading.Event(), []

    def session(connected) -> None:
        attempts.append(1)
        if len(attempts) == 3:
            connected()
        if len(attempts) == 5:
            stop.set()
        raise ConnectionError("broker gone")

    with caplog.at_level(logging.WARNING, logger="test.backoff"):
        keep_running(
            session, stop=stop, retry_on=(ConnectionError,), what="test link",
            logger=logging.getLogger("test.backoff"), initial=0.1, maximum=10, jitter=0,
        )  # fmt: skip
    said = [r.getMessage() for r in caplog.records if r.name == "test.backoff"]
    pauses = [line.rpartition("again in ")[2] for line in said]
    assert len(attempts) == 5
    assert pauses == ["0.1s", "0.2s", "0.1s", "0.2s"]

    def bug(connected) -> None:
        raise ValueError("bug")

    with pytest.raises(ValueError):  # not one of retry_on: propagates at once
        keep_running(bug, stop=threading.Event(), retry_on=(ConnectionError,),
                     logger=logging.getLogger("test.backoff"), what="x")  # fmt: skip


def test_consumer_health_sees_workers_that_beat_but_do_not_consume(
    settings, tmp_path, topology, publish, event_payload, instance_data
):
    """Workers alive and beating `consuming`, messages ready in the queue, and nothing received
    for longer than --max-idle: the consumer is stalled, whatever the heartbeats say."""
    import io
    import json
    import os

    from django.core.management import call_command

    from django_tools.heartbeat import consumer_file

    settings.HEARTBEAT_DIR = str(tmp_path)

    def health() -> tuple[int, str]:
        out, err = io.StringIO(), io.StringIO()
        try:
            call_command("cqrs_consume_health", "--max-idle", "30", stdout=out, stderr=err)
        except SystemExit as exc:
            return int(exc.code), err.getvalue().strip()
        return 0, out.getvalue().strip()

    def beat(last_activity: float) -> None:
        (tmp_path / consumer_file()).write_text(json.dumps({
            "pid": os.getpid(), "time": time.time(), "state": "consuming",
            "last_activity": last_activity,
        }))  # fmt: skip

    beat(time.time() - 120)
    assert health()[0] == 0  # nothing waiting: an idle consumer is fine
    publish(event_payload("SAVE", instance_data(1, 0)))
    publish(event_payload("SAVE", instance_data(2, 0)))
    wait_until(lambda: health()[0] == 1, timeout=10, what="the stall seen")
    code, line = health()
    assert code == 1 and line.startswith(
        f"consumer unhealthy: the consumer is stalled: 2 messages ready in {topology.queue}, "
        "nothing received for 12"
    ), line
    beat(time.time() - 1)  # a worker that just received something is not stalled
    assert health()[0] == 0
