"""GET /api/replication/status and /metrics of the replica, against the real broker."""

import json
import os
import socket
import time
from datetime import timedelta
from unittest import mock

import pytest
from django.db import OperationalError
from django.utils import timezone

from django_tools.connectivity import amqp_channel
from django_tools.heartbeat import Heartbeat, consumer_file, supervisor_file
from django_tools.observability.metrics import exported_metric_names
from django_tools.replica import consumer as consumer_module
from django_tools.replica.models import ReplicaState
from django_tools.replica.queue_migration import migrate
from django_tools.replica.topology import Topology
from django_tools.testing import queue_depth, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def status(client) -> dict:
    response = client.get("/api/replication/status")
    assert response.status_code == 200
    return response.json()


def test_status_moves_as_messages_queue_apply_retry_and_dead_letter(
    client, consumers, publish, event_payload, instance_data, rabbitmq_url, topology
):
    initial = status(client)
    assert initial["broker"] == {"reachable": True, "error": None}
    assert initial["queue"] == {
        "name": topology.queue, "depth": 0, "consumers": 0, "migrating": None
    }  # fmt: skip
    assert initial["dead_letters"]["count"] == 0 and initial["retries_scheduled"] == 0
    assert initial["last_applied"] is None and initial["estimated_lag_seconds"] == 0.0

    for pk in (1, 2, 3):
        publish(event_payload("SAVE", instance_data(pk, 0)))
    wait_until(lambda: status(client)["queue"]["depth"] == 3, what="three queued")
    assert status(client)["estimated_lag_seconds"] is None  # nothing applied yet to measure from

    consumers.start()
    wait_until(lambda: status(client)["queue"]["depth"] == 0, what="the queue drained")
    applied = status(client)
    assert applied["queue"]["consumers"] == 1
    last = applied["last_applied"]
    assert (last["cqrs_id"], last["revision"], last["signal_type"]) == ("produto", 0, "SAVE")
    assert last["instance_pk"] in {"1", "2", "3"} and last["delay_ms"] is not None
    assert applied["estimated_lag_seconds"] == 0.0

    publish(b"poison")
    wait_until(lambda: status(client)["dead_letters"]["count"] == 1, what="a dead letter")


def test_scheduled_retries_are_counted(
    client, consumers, publish, event_payload, instance_data, topology
):
    def down(changes):
        raise OperationalError("database is locked")

    with mock.patch.object(consumer_module, "apply_changes", down):
        consumers.start()
        publish(event_payload("SAVE", instance_data(9, 0)))
        wait_until(lambda: status(client)["retries_scheduled"] == 1, what="a scheduled retry")


def test_an_unreachable_or_silent_broker_is_reported_not_waited_for(client, settings, topology):
    settings.CQRS = {**settings.CQRS, "url": "amqp://admin:admin@127.0.0.1:1/"}
    started = time.monotonic()
    body = status(client)
    assert body["broker"]["reachable"] is False and body["broker"]["error"]
    assert body["queue"]["depth"] is None and body["estimated_lag_seconds"] is None

    # A broker that accepts the connection and then never says a word.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    settings.CQRS = {
        **settings.CQRS,
        "url": f"amqp://admin:admin@127.0.0.1:{silent.getsockname()[1]}/",
    }
    started = time.monotonic()
    body = status(client)
    elapsed = time.monotonic() - started
    silent.close()
    assert body["broker"]["reachable"] is False
    assert elapsed < 4, f"the status page waited {elapsed:.1f}s for a silent broker"


def test_metrics_report_what_the_consumer_did(
    client, consumers, publish, event_payload, instance_data, rabbitmq_url, topology
):
    publish(event_payload("SAVE", instance_data(20, 0)))
    publish(event_payload("SAVE", instance_data(20, 0)))  # a duplicate
    publish(b"{not json")
    consumers.start()
    wait_until(lambda: queue_depth(rabbitmq_url, topology.dead_letter_queue) == 1)
    wait_until(lambda: consumers.stats("duplicate") == 1)
    body = client.get("/metrics").content.decode()
    lines = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
             for line in body.splitlines() if line and not line.startswith("#")}  # fmt: skip
    assert lines['cqrs_events_applied_total{cqrs_id="produto",outcome="applied"}'] >= 1
    assert lines['cqrs_events_applied_total{cqrs_id="produto",outcome="duplicate"}'] >= 1
    assert lines['cqrs_events_dead_lettered_total{reason="permanent"}'] >= 1
    assert lines["cqrs_replication_lag_seconds_count"] >= 1
    assert lines["cqrs_broker_up"] == 1
    assert lines["cqrs_dead_letter_messages"] == 1
    assert lines["cqrs_dead_letters"] == 1  # deprecated, one release
    # What the scrape shows is what the collectors describe (monitoring/ is checked against it).
    assert {name.split("{")[0] for name in lines} <= exported_metric_names()


def test_the_dead_letter_report_warns_and_counts_while_the_queue_is_not_empty(
    consumers, publish, rabbitmq_url, topology, caplog
):
    from django_tools.replica import metrics
    from django_tools.replica.tasks import dead_letter_report

    assert dead_letter_report.apply().get() == 0
    before = metrics.DEAD_LETTER_REPORTS._value.get()
    publish(b"poison")
    consumers.start()
    wait_until(lambda: queue_depth(rabbitmq_url, topology.dead_letter_queue) == 1)
    with caplog.at_level("WARNING"):
        assert dead_letter_report.apply().get() == 1
    assert "1 messages in" in caplog.text and "cqrs_dead_letters dump" in caplog.text
    assert metrics.DEAD_LETTER_REPORTS._value.get() == before + 1
    assert metrics.DEAD_LETTER_REPORT_MESSAGES._value.get() == 1
    assert metrics.DEAD_LETTERS_REPORTED_DEPRECATED._value.get() == 1


class Interrupted(Exception):
    pass


def test_messages_held_by_an_unfinished_queue_migration_count_as_lag(
    client, publish, event_payload, instance_data, rabbitmq_url, topology
):
    """A migration interrupted while moving back leaves messages in `<queue>.migrating`: the
    status counted only the queue (empty) and said the replica was caught up (lag 0)."""
    behind = timezone.now() - timedelta(seconds=60)
    ReplicaState.objects.create(
        cqrs_id="produto", instance_pk="1", revision=0, signal_type="SAVE",
        master_updated_at=behind, applied_at=behind,
    )  # fmt: skip
    for pk in (1, 2, 3):
        publish(event_payload("SAVE", instance_data(pk, 1)))
    wait_until(lambda: queue_depth(rabbitmq_url, topology.queue) == 3, what="three queued")

    def interrupt(where: str) -> None:
        if where.startswith(f"{topology.queue}: declared as classic"):
            raise Interrupted(where)

    with amqp_channel(rabbitmq_url) as channel, pytest.raises(Interrupted):
        migrate(channel.connection, topology, "classic", checkpoint=interrupt)
    try:
        body = wait_until(
            lambda: (body := status(client))["queue"]["migrating"] == 3 and body,
            what="the held messages counted",
        )
        assert body["queue"]["depth"] == 0
        assert body["estimated_lag_seconds"] >= 60  # behind, not caught up
        lines = client.get("/metrics").content.decode().splitlines()
        assert "cqrs_queue_migrating 3.0" in lines
    finally:
        with amqp_channel(rabbitmq_url) as channel:
            channel.queue_delete(Topology.migrating(topology.queue))
            channel.queue_delete(topology.migration_marker("classic"))


def test_metrics_show_the_consumers_heartbeats(client, settings, tmp_path):
    """The workers' and the supervisor's heartbeat files, as `cqrs_consume_health` reads them,
    at every scrape: what the alerts ConsumerDown and ConsumerRestartsBackingOff
    (monitoring/prometheus/alerts.yml) watch."""
    settings.HEARTBEAT_DIR = str(tmp_path)

    def gauges() -> dict[str, float]:
        body = client.get("/metrics").content.decode()
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in body.splitlines() if line.startswith("cqrs_consumer_")}  # fmt: skip

    none = gauges()
    assert none['cqrs_consumer_workers{state="consuming"}'] == 0
    assert none["cqrs_consumer_worker_deaths"] == 0
    assert none["cqrs_consumer_restart_backoff_seconds"] == 0
    assert "cqrs_consumer_heartbeat_age_seconds" not in none

    worker = tmp_path / consumer_file(os.getpid())  # this process, alive
    Heartbeat(worker).beat("consuming")
    Heartbeat(tmp_path / supervisor_file(os.getpid())).beat(
        "restarting", workers=2, deaths=7, death_window=60, restart_in=4.0
    )
    beating = gauges()
    assert beating['cqrs_consumer_workers{state="consuming"}'] == 1
    assert 0 <= beating["cqrs_consumer_heartbeat_age_seconds"] < 5
    assert beating["cqrs_consumer_worker_deaths"] == 7
    assert beating["cqrs_consumer_restart_backoff_seconds"] == 4

    pulse = json.loads(worker.read_text())
    worker.write_text(json.dumps({**pulse, "time": time.time() - 60}))
    stale = gauges()
    assert stale['cqrs_consumer_workers{state="consuming"}'] == 0
    assert stale['cqrs_consumer_workers{state="stale"}'] == 1
    assert stale["cqrs_consumer_heartbeat_age_seconds"] >= 60
