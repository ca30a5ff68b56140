"""The transactional outbox with the real processes: the broker goes away, the relay is killed,
two relays run at once — and every write still reaches the feed."""

import os
import threading
import time

import httpx
import pika
import pytest
from e2e_lab import (
    API_KEY,
    FEED_DIR,
    PRODUTOS_DIR,
    Databases,
    ManageProcess,
    ServiceDatabase,
    create_products,
    delete_broker_objects,
    feed_consumer,
    outbox_relay,
    replica_queues,
    run_manage,
    service_environment,
    start_lab,
    wait_until,
)
from tcp_proxy import TcpProxy

pytestmark = pytest.mark.e2e


class ReadinessPoller:
    """`GET /health/ready` every 0.1 s in a thread until stopped; the statuses it got (an
    error instead of an answer counts as 0)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def start(self) -> "ReadinessPoller":
        self._thread.start()
        return self

    def _poll(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=5) as client:
            while not self._stop.wait(0.1):
                try:
                    self.statuses.append(client.get("/health/ready").status_code)
                except httpx.HTTPError:
                    self.statuses.append(0)

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(10)
        return self.statuses


def post_products(client: httpx.Client, prefix: str, count: int) -> tuple[list[int], list[float]]:
    ids, latencies = [], []
    for n in range(count):
        started = time.perf_counter()
        response = client.post(
            "/api/produtos/", json={"sku": f"{prefix}-{n}", "nome": "x", "preco": n}
        )
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids, latencies


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    return f"p50 {ordered[len(ordered) // 2] * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms"


def test_writes_during_a_broker_outage_all_succeed_and_all_reach_the_feed(
    tmp_path, rabbitmq_url, redis_url
):
    params = pika.URLParameters(rabbitmq_url)
    proxy = TcpProxy(params.host, params.port).start()
    databases = Databases(tmp_path)
    lab = start_lab(tmp_path, proxy.url(rabbitmq_url), databases)
    try:
        with (
            httpx.Client(
                base_url=lab.produtos_url, headers={"X-API-Key": API_KEY}, timeout=10
            ) as produtos,
            httpx.Client(base_url=lab.feed_url, timeout=10) as feed,
        ):
            _, up = post_products(produtos, "UP", 30)

            # An orchestrator polls readiness through the whole outage: the master must stay
            # ready (writes go to the outbox), only its detailed health says the broker is gone.
            readiness = ReadinessPoller(lab.produtos_url).start()
            proxy.cut()
            outage_started = time.monotonic()
            ids, down = post_products(produtos, "DOWN", 30)
            health = produtos.get("/health")
            assert health.status_code == 200
            assert health.json()["status"] == "degraded"
            assert health.json()["checks"]["rabbitmq"]["ok"] is False
            assert health.json()["detail"].startswith("rabbitmq:")
            time.sleep(max(0.0, 5 - (time.monotonic() - outage_started)))  # a 5 s outage
            proxy.restore()
            restored = time.monotonic()
            wait_until(lambda: produtos.get("/health").json()["status"] == "ok", 30,
                       interval=0.2, what="health back to ok")  # fmt: skip
            statuses = readiness.stop()
            assert len(statuses) >= 10, statuses
            assert set(statuses) == {200}, f"/health/ready during the outage: {statuses}"

            def all_on_the_feed():
                listed = feed.get("/api/feed/", params={"q": "DOWN-", "limit": 100}).json()
                return listed["count"] == 30 and listed

            listed = wait_until(
                all_on_the_feed, 60, interval=0.1, what="the outage's writes on the feed"
            )
            converged = time.monotonic() - restored
            assert sorted(item["id"] for item in listed["items"]) == sorted(ids)

            # And the pipeline keeps working: writes after the outage arrive too (a relay that
            # kept the old channel's confirm tags stalled here), and the backlog drains to 0.
            after_ids, _ = post_products(produtos, "AFTER", 200)

            def after_on_the_feed():
                listed = feed.get("/api/feed/", params={"q": "AFTER-", "limit": 1000}).json()
                return sorted(item["id"] for item in listed["items"]) == sorted(after_ids)

            wait_until(after_on_the_feed, 60, interval=0.1, what="the writes after the outage")
            wait_until(lambda: produtos.get("/api/outbox/status").json()["backlog"] == 0, 30,
                       what="the outbox backlog to drain")  # fmt: skip
            print(
                f"\nwrite latency broker up: {ms(up)}; broker down: {ms(down)}; "
                f"feed converged {converged:.1f}s after a 5 s outage ended"
            )
    finally:
        lab.stop()
        proxy.cut()
        delete_broker_objects(rabbitmq_url, lab.exchange, lab.broker_queues())
        databases.drop_all()


@pytest.fixture
def pipeline(tmp_path, rabbitmq_url):
    """A master and a replica database, exchange and queue of their own, and processes on
    demand; everything stopped and removed afterwards."""
    databases = Databases(tmp_path)
    feed_env, feed_url = service_environment("feed", tmp_path, rabbitmq_url, databases)
    produtos_env, produtos_url = service_environment(
        "produtos", tmp_path, rabbitmq_url, databases, CQRS_EXCHANGE=feed_env["CQRS_EXCHANGE"]
    )
    processes: list[ManageProcess] = []

    class Pipeline:
        produtos = ServiceDatabase(produtos_url)
        feed = ServiceDatabase(feed_url)
        env = produtos_env
        replica_env = dict(feed_env)
        queue = feed_env["CQRS_QUEUE"]

        @staticmethod
        def track(process: ManageProcess) -> None:
            processes.append(process)

        @staticmethod
        def consumer(workers: int = 1) -> ManageProcess:
            processes.append(feed_consumer(feed_env, tmp_path / "consumer.log", workers))
            return processes[-1]

        @staticmethod
        def relay(*args: str) -> ManageProcess:
            processes.append(outbox_relay(produtos_env, tmp_path / "relay.log", *args))
            return processes[-1]

        @staticmethod
        def published() -> int:
            return Pipeline.produtos.scalar(
                "SELECT COUNT(*) FROM cqrs_outbox_outboxevent WHERE published_at IS NOT NULL"
            )

        @staticmethod
        def log() -> str:
            return "".join(p.read_text()[-3000:] for p in tmp_path.glob("*.log"))

    yield Pipeline
    for process in processes:
        process.stop()
    delete_broker_objects(rabbitmq_url, feed_env["CQRS_EXCHANGE"], replica_queues(Pipeline.queue))
    databases.drop_all()


def test_a_relay_killed_mid_batch_loses_nothing_and_its_duplicates_are_ignored(pipeline):
    create_products(pipeline.env, 3000)
    assert pipeline.produtos.scalar("SELECT COUNT(*) FROM cqrs_outbox_outboxevent") == 3000
    pipeline.consumer()
    relay = pipeline.relay("--batch-size", "100")
    wait_until(lambda: pipeline.published() >= 600, 60, what="the relay to be under way")
    relay.kill9()
    at_kill = pipeline.published()
    assert at_kill < 3000, "the relay finished before it could be killed"
    pipeline.relay("--batch-size", "100")

    wait_until(
        lambda: len(pipeline.feed.rows()) == 3000 and pipeline.published() == 3000,
        90,
        interval=0.2,
        what="every product on the replica",
    )
    assert all(revision == 0 for revision, _, _ in pipeline.feed.rows().values())
    dead = pipeline.feed.scalar("SELECT COUNT(*) FROM cqrs_replica_tombstone")
    assert dead == 0
    # The restarted relay goes on with what is written after it came back.
    create_products(pipeline.env, 200, start=3000)
    wait_until(
        lambda: len(pipeline.feed.rows()) == 3200 and pipeline.published() == 3200, 60,
        interval=0.2, what="the writes after the restart",
    )  # fmt: skip
    print(
        f"\nrelay killed after {at_kill} of 3000 confirmed; all 3000 on the replica after restart"
    )


def _is_postgres() -> bool:
    return os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))


@pytest.mark.skipif(
    not _is_postgres(),
    reason="PostgreSQL only (advisory-lock relays); SQLite allows one relay at a time, see "
    "django_tools/tests/test_relay.py. Runs with DATABASE_URL=postgres://… (CI does).",
)
def test_two_relays_on_postgresql_publish_everything_once_in_per_product_order(
    pipeline, rabbitmq_url
):
    create_products(pipeline.env, 400, updates=3)  # 1600 events, products interleaved
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    listen = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(listen, pipeline.env["CQRS_EXCHANGE"], routing_key="produto")

    leader = pipeline.relay("--batch-size", "50")
    wait_until(lambda: pipeline.published() > 0, 30, what="the first relay to lead")
    standby = pipeline.relay("--batch-size", "50")
    wait_until(lambda: pipeline.published() >= 400, 60, what="progress")
    leader.kill9()
    wait_until(lambda: pipeline.published() == 1600, 60, what="the standby to finish")
    standby.stop()

    import orjson

    arrivals = []
    while (message := channel.basic_get(listen, auto_ack=True))[0] is not None:
        body = orjson.loads(message[2])
        arrivals.append((body["instance_pk"], body["instance_data"]["cqrs_revision"]))
    connection.close()
    # Only the 1600 events written: 400 products, revisions 0 (create) to 3 (third update).
    assert len({pk for pk, _ in arrivals}) == 400
    assert {revision for _, revision in arrivals} == {0, 1, 2, 3}
    assert len(set(arrivals)) == 1600, "every event published at least once"
    firsts: dict[int, list[int]] = {}
    for pk, revision in dict.fromkeys(arrivals):  # first arrival of each event, in order
        firsts.setdefault(pk, []).append(revision)
    assert all(revisions == sorted(revisions) for revisions in firsts.values())
    print(
        f"\ntwo relays, leader killed: {len(arrivals)} messages for 1600 events "
        f"({len(arrivals) - 1600} duplicates), per-product order kept"
    )


def test_a_new_replica_catches_up_with_cqrs_sync(pipeline, rabbitmq_url, tmp_path):
    """A replica whose queue did not exist when the events were published: its queue is
    declared, then `cqrs_sync` re-sends the master's current state to that queue only."""
    create_products(pipeline.env, 200, updates=1)
    pipeline.relay()
    wait_until(lambda: pipeline.published() == 400, 60, what="the first publication")
    # The new replica appears now, with a queue of its own: those events are gone for it.
    newcomer = {**pipeline.replica_env, "CQRS_QUEUE": f"{pipeline.queue}_new"}
    run_manage(FEED_DIR, newcomer, "cqrs_declare")
    try:
        consumer = feed_consumer(newcomer, tmp_path / "newcomer.log")
        pipeline.track(consumer)
        run_manage(
            PRODUTOS_DIR, pipeline.env, "cqrs_sync", "--cqrs-id", "produto", "--filter", "{}",
            "--queue", newcomer["CQRS_QUEUE"],
        )  # fmt: skip
        wait_until(
            lambda: (
                {rev for rev, _, _ in pipeline.feed.rows().values()} == {1}
                and len(pipeline.feed.rows()) == 200
            ),
            60,
            what="the synced replica",
        )
    finally:
        delete_broker_objects(
            rabbitmq_url, pipeline.env["CQRS_EXCHANGE"], replica_queues(newcomer["CQRS_QUEUE"])
        )
