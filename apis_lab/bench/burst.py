"""The REST burst: the real `apis up` processes (gunicorn, relay, consumer), N creates over HTTP
from C concurrent clients, and how long the feed takes to have all of them."""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from apis_lab.broker import delete_broker_objects, replica_queues
from apis_lab.databases import Databases
from apis_lab.lab import start_lab

API_KEY = "bench-key"


@dataclass(frozen=True)
class BurstResult:
    total: int
    clients: int
    write_seconds: float
    complete_after_seconds: float
    errors: int

    @property
    def writes_per_s(self) -> float:
        return self.total / self.write_seconds if self.write_seconds else 0.0


def _client(base_url: str) -> http.client.HTTPConnection:
    parts = urlsplit(base_url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)


def _request(conn: http.client.HTTPConnection, method: str, path: str, body: dict | None = None):
    headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"null")


def run_burst(
    rabbitmq_url: str, databases: Databases, workdir: Path, progress, total: int, clients: int
) -> BurstResult:
    progress.show("REST burst: starting `apis up`…")
    lab = start_lab(workdir, rabbitmq_url, databases, api_key=API_KEY, prefix="bench")
    try:
        errors = []
        done = [0]
        lock = threading.Lock()
        barrier = threading.Barrier(clients + 1)

        def client(index: int) -> None:
            conn = _client(lab.produtos_url)
            barrier.wait()
            for n in range(index, total, clients):
                status, _ = _request(
                    conn, "POST", "/api/produtos/", {"sku": f"BURST-{n}", "nome": "x", "preco": 1}
                )
                with lock:
                    done[0] += 1
                    if status != 201:
                        errors.append(status)
            conn.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        barrier.wait()
        started = time.monotonic()
        while any(t.is_alive() for t in threads):
            progress.show(f"REST burst: {done[0]}/{total} writes from {clients} clients")
            time.sleep(0.05)
        last_write = time.monotonic()
        feed = _client(lab.feed_url)
        deadline = last_write + 60
        while True:
            _, listed = _request(feed, "GET", "/api/feed/?q=BURST-&limit=1")
            if listed["count"] >= total - len(errors) or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        complete = time.monotonic()
        feed.close()
    finally:
        lab.stop()
        delete_broker_objects(rabbitmq_url, lab.exchange, replica_queues(lab.queue))
    result = BurstResult(
        total=total,
        clients=clients,
        write_seconds=last_write - started,
        complete_after_seconds=complete - last_write,
        errors=len(errors),
    )
    progress.done(
        f"REST burst: {total} creates from {clients} clients at {result.writes_per_s:,.0f} "
        f"writes/s; feed complete {result.complete_after_seconds * 1000:,.0f} ms after the last"
    )
    return result
