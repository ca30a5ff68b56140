"""The REST burst: the real `apis up` processes (gunicorn, relay, consumer), N creates over HTTP
from C concurrent clients, and how long the feed takes to have all of them; and the same burst
with replication off (apis_lab/bench/off_hook: no outbox row), the baseline of its price."""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from apis_lab.bench import off_hook
from apis_lab.bench.pipelines import BenchError
from apis_lab.bench.report import BurstResult
from apis_lab.broker_objects import delete_broker_objects, replica_queues
from apis_lab.databases import Databases, ServiceDatabase
from apis_lab.lab_run import start_lab

API_KEY = "bench-key"
#: The outbox's table on the master (django_tools.outbox, app label `cqrs_outbox`).
OUTBOX_TABLE = "cqrs_outbox_outboxevent"


def _client(base_url: str) -> http.client.HTTPConnection:
    parts = urlsplit(base_url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)


def _request(conn: http.client.HTTPConnection, method: str, path: str, body: dict | None = None):
    headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"null")


def run_burst(
    rabbitmq_url: str,
    databases: Databases,
    workdir: Path,
    progress,
    total: int,
    clients: int,
    extra_env: dict[str, str] | None = None,
    web_workers: int | None = None,
    replication: bool = True,
) -> BurstResult:
    """`replication=False`: the same burst on an `apis up` whose master writes no outbox row
    (and the feed is not waited for: nothing reaches it)."""
    what = "REST burst" + ("" if replication else " (replication off)")
    progress.show(f"{what}: starting `apis up`…")
    workers = ["--web-workers", str(web_workers)] if web_workers else []
    env = {**(extra_env or {}), **({} if replication else off_hook.environment())}
    lab = start_lab(
        workdir, rabbitmq_url, databases, *workers, api_key=API_KEY, prefix="bench",
        extra_env=env,
    )  # fmt: skip
    try:
        errors, latencies = [], []
        done = [0]
        lock = threading.Lock()
        barrier = threading.Barrier(clients + 1)

        def client(index: int) -> None:
            conn = _client(lab.produtos_url)
            barrier.wait()
            for n in range(index, total, clients):
                sent = time.perf_counter()
                status, _ = _request(
                    conn, "POST", "/api/produtos/", {"sku": f"BURST-{n}", "nome": "x", "preco": 1}
                )
                took = (time.perf_counter() - sent) * 1000
                with lock:
                    done[0] += 1
                    latencies.append(took)
                    if status != 201:
                        errors.append(status)
            conn.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        barrier.wait()
        started = time.monotonic()
        while any(t.is_alive() for t in threads):
            progress.show(f"{what}: {done[0]}/{total} writes from {clients} clients")
            time.sleep(0.05)
        last_write = time.monotonic()
        if replication:
            feed = _client(lab.feed_url)
            deadline = last_write + 60
            while True:
                _, listed = _request(feed, "GET", "/api/feed/?q=BURST-&limit=1")
                if listed["count"] >= total - len(errors) or time.monotonic() > deadline:
                    break
                time.sleep(0.005)
            complete = time.monotonic()
            feed.close()
        else:
            complete = last_write
            # The baseline must be what it says: the creates went through, without their events.
            master = ServiceDatabase(lab.database_urls["produtos"])
            rows = master.scalar(f"SELECT COUNT(*) FROM {OUTBOX_TABLE}")  # nosec B608 # a constant
            if rows:
                raise BenchError(f"the burst with replication off wrote {rows} outbox rows")
    finally:
        lab.stop()
        delete_broker_objects(rabbitmq_url, lab.exchange, replica_queues(lab.queue))
    result = BurstResult(
        total=total,
        clients=clients,
        write_seconds=last_write - started,
        complete_after_seconds=complete - last_write,
        errors=len(errors),
        latencies_ms=latencies,
        replication=replication,
    )
    progress.done(
        f"{what}: {total} creates from {clients} clients at {result.writes_per_s:,.0f} writes/s"
        + (f"; feed complete {result.complete_after_seconds * 1000:,.0f} ms after the last"
           if replication else "")
    )  # fmt: skip
    return result
