"""Monitoring with the real processes: metrics added up across worker processes, and one
request id in the master's and the replica's log lines for that change."""

import json
import re

import httpx
import pytest
from e2e_lab import API_KEY, Databases, delete_broker_objects, start_lab, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.any_database,
]  # the database plays no part here: CI runs it in its SQLite pass only


def samples(client: httpx.Client) -> dict[str, float]:
    body = client.get("/metrics").text
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line and not line.startswith("#")
    }


def json_lines(output: str, process: str) -> list[dict]:
    """The JSON log lines one process of `apis up` printed (honcho prefixes `time name |`)."""
    found = []
    for line in output.splitlines():
        match = re.match(rf"^\S+ {process}\s+\| (\{{.*\}})$", line)
        if match:
            found.append(json.loads(match.group(1)))
    return found


@pytest.fixture(scope="module")
def json_lab(tmp_path_factory, rabbitmq_url, redis_url):
    databases = Databases(tmp_path_factory.mktemp("monitoring"))
    lab = start_lab(databases.tmp, rabbitmq_url, databases, LOG_FORMAT="json")
    yield lab
    lab.stop()
    delete_broker_objects(rabbitmq_url, lab.exchange, lab.broker_queues())
    databases.drop_all()


def test_metrics_add_up_across_processes_and_a_request_id_reaches_the_replica(json_lab):
    with (
        httpx.Client(base_url=json_lab.produtos_url, headers={"X-API-Key": API_KEY}) as produtos,
        httpx.Client(base_url=json_lab.feed_url) as feed,
    ):
        for n in range(10):
            response = produtos.post(
                "/api/produtos/",
                json={"sku": f"MON-{n}", "nome": "x", "preco": 1},
                headers={"X-Request-ID": f"trace-{n}"},
            )
            assert response.status_code == 201
            assert response.headers["X-Request-ID"] == f"trace-{n}"
        wait_until(lambda: feed.get("/api/feed/", params={"q": "MON-"}).json()["count"] == 10, 20)
        # The relay marks confirmed rows published in groups (up to 50 ms after the broker's
        # confirm, which comes about when the replica has the row): wait for the mark.
        wait_until(
            lambda: samples(produtos)["cqrs_outbox_backlog"] == 0, 10, what="the rows marked"
        )

        master = samples(produtos)
        written = master['cqrs_outbox_events_written_total{cqrs_id="produto",signal_type="SAVE"}']
        assert written == 10  # counted by two gunicorn workers, added up
        assert master["cqrs_outbox_events_published_total"] >= 10  # counted by the relay
        created = 'apis_http_requests_total{method="POST",route="api/produtos/",status="201"}'
        assert master[created] == 10
        assert master["cqrs_outbox_backlog"] == 0
        # The relay's heartbeat, read by the web workers at scrape (the alert RelayDown's).
        assert master["cqrs_relay_up"] == 1 and master["cqrs_relay_blocked"] == 0

        replica = samples(feed)
        applied = replica['cqrs_events_applied_total{cqrs_id="produto",outcome="applied"}']
        assert applied >= 10  # counted by the consumer process
        assert replica["cqrs_replication_lag_seconds_count"] >= 10
        # The consumer workers' heartbeats, read likewise (the alert ConsumerDown's).
        assert replica['cqrs_consumer_workers{state="consuming"}'] >= 1
        assert replica["cqrs_consumer_restart_backoff_seconds"] == 0
        # The broker's count of consumers lags a consumer that reconnects (a link dropped under
        # load is rebuilt in seconds): wait for it rather than read it once.
        wait_until(
            lambda: samples(feed).get("cqrs_queue_consumers", 0) >= 1, 20, what="a consumer seen"
        )

        status = feed.get("/api/replication/status").json()
        assert status["broker"]["reachable"] and status["queue"]["depth"] == 0
        assert status["last_applied"]["correlation_id"].startswith("trace-")
        outbox = produtos.get("/api/outbox/status").json()
        assert outbox["backlog"] == 0 and outbox["last_published_at"] is not None

    def traced(process: str) -> list[dict]:
        return [
            e
            for e in json_lines(json_lab.output(), process)
            if e.get("correlation_id") == "trace-3"
        ]

    wait_until(lambda: traced("consumer"), 10, what="the consumer's log line for trace-3")
    master_lines, replica_lines = traced("produtos"), traced("consumer")
    assert any(e["message"].startswith("POST /api/produtos/ 201") for e in master_lines)
    assert any(e["message"].endswith(": applied") for e in replica_lines)
    assert {e["service"] for e in master_lines} == {"produtos"}
    assert {e["service"] for e in replica_lines} == {"feed"}
