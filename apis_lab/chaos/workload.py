"""The REST workload of the fault suite: clients creating, updating and deleting products on the
master at a steady rate, keeping what each acknowledged write left behind.

Every client owns its products (nobody else touches them), so the state a product must have is
known exactly: the body of its last acknowledged write, or gone after an acknowledged delete. A
write whose outcome is unknown (the connection dropped, a server worker killed mid-request, a
timeout) makes its product *uncertain*: the master alone then says what it is, and the client
leaves that product alone from then on.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import httpx

OK, UNCERTAIN, REFUSED = "ok", "uncertain", "refused"


@dataclass(frozen=True)
class Write:
    op: str  # create, update, delete
    pk: int | None
    started: float  # time.monotonic()
    seconds: float
    outcome: str  # ok, uncertain, refused
    status: int | None


@dataclass
class Ledger:
    """What the workload did and what it was told."""

    writes: list[Write] = field(default_factory=list)
    #: pk → the fields of its last acknowledged write, or None after an acknowledged delete.
    expected: dict[int, dict | None] = field(default_factory=dict)
    uncertain: set[int] = field(default_factory=set)
    uncertain_creates: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, write: Write, state: dict | None = None, pk_state: bool = False) -> None:
        with self.lock:
            self.writes.append(write)
            if write.outcome == UNCERTAIN:
                if write.pk is None:
                    self.uncertain_creates += 1
                else:
                    self.uncertain.add(write.pk)
            elif write.outcome == OK and pk_state and write.pk is not None:
                self.expected[write.pk] = state

    def acknowledged(self) -> int:
        with self.lock:
            return sum(w.outcome == OK for w in self.writes)

    def count(self, outcome: str) -> int:
        with self.lock:
            return sum(w.outcome == outcome for w in self.writes)

    def during(self, start: float, end: float) -> list[Write]:
        with self.lock:
            return [w for w in self.writes if start <= w.started <= end]


class Workload:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        rate: float = 30.0,
        clients: int = 4,
        seed: int = 0,
        timeout: float = 10.0,
    ) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.rate = rate
        self.clients = clients
        self.seed = seed
        self.timeout = timeout
        self.ledger = Ledger()
        self._stop = threading.Event()
        self._running = threading.Event()  # cleared: paused
        self._in_flight = 0
        self._in_flight_lock = threading.Condition()
        self._threads: list[threading.Thread] = []

    def start(self) -> Workload:
        self._running.set()
        for index in range(self.clients):
            thread = threading.Thread(
                target=self._client, args=(index,), name=f"workload-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def pause(self, timeout: float = 30.0) -> None:
        """No new write starts; returns once the writes in flight have their answer."""
        self._running.clear()
        with self._in_flight_lock:
            self._in_flight_lock.wait_for(lambda: self._in_flight == 0, timeout)

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)

    # --- one client ----------------------------------------------------------------------

    def _client(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        pause = self.clients / self.rate if self.rate > 0 else 0.0
        owned: list[int] = []
        sequence = 0
        with httpx.Client(
            base_url=self.base_url, headers={"X-API-Key": self.api_key}, timeout=self.timeout
        ) as http:
            while not self._stop.is_set():
                self._running.wait()
                if self._stop.is_set():
                    return
                with self._in_flight_lock:
                    if not self._running.is_set():
                        continue
                    self._in_flight += 1
                try:
                    sequence += 1
                    self._one_write(http, rng, owned, f"{index}-{sequence}")
                finally:
                    with self._in_flight_lock:
                        self._in_flight -= 1
                        self._in_flight_lock.notify_all()
                if pause:
                    self._stop.wait(pause * rng.uniform(0.5, 1.5))

    def _one_write(self, http: httpx.Client, rng: random.Random, owned: list[int], tag: str):
        roll = rng.random()
        if len(owned) < 5 or roll < 0.3:
            body = {
                "sku": f"CH-{self.seed}-{tag}",
                "nome": f"n{tag}",
                "preco": f"{rng.randint(0, 999)}.{rng.randint(0, 99):02d}",
                "estoque": rng.randint(0, 50),
            }
            write, response = self._send(http, "create", None, "POST", "/api/produtos/", body)
            if write.outcome == OK:
                produto = response.json()
                write = Write("create", produto["id"], write.started, write.seconds, OK, 201)
                owned.append(produto["id"])
                self.ledger.record(write, _state(produto), pk_state=True)
            else:
                self.ledger.record(write)
            return
        pk = rng.choice(owned)
        if roll < 0.85:
            body = {"nome": f"u{tag}", "estoque": rng.randint(0, 50)}
            write, response = self._send(http, "update", pk, "PATCH", f"/api/produtos/{pk}", body)
            self.ledger.record(write, _state(response.json()) if write.outcome == OK else None,
                               pk_state=True)  # fmt: skip
        else:
            write, _ = self._send(http, "delete", pk, "DELETE", f"/api/produtos/{pk}", None)
            self.ledger.record(write, None, pk_state=True)
            owned.remove(pk)
        if write.outcome != OK and pk in owned:
            owned.remove(pk)  # uncertain from now on: the master alone says what it is

    def _send(self, http, op, pk, method, path, body):
        started = time.monotonic()
        try:
            response = http.request(method, path, json=body)
        except httpx.HTTPError:
            return Write(op, pk, started, time.monotonic() - started, UNCERTAIN, None), None
        seconds = time.monotonic() - started
        if response.status_code >= 500:
            outcome = UNCERTAIN  # the server may or may not have committed before failing
        elif response.status_code >= 400:
            outcome = REFUSED
        else:
            outcome = OK
        return Write(op, pk, started, seconds, outcome, response.status_code), response


#: The fields a write decides (the rest is the master's own).
STATE_FIELDS = ("sku", "nome", "preco", "estoque")


def _state(produto: dict) -> dict:
    return {name: produto[name] for name in STATE_FIELDS}
