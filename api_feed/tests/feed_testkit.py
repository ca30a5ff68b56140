"""Helpers of api_feed's tests: the reliable consumer in threads, waiting, payloads."""

import threading

from dj_cqrs.dataclasses import TransportPayload
from django.db import connections

from django_tools.connectivity import amqp_channel
from django_tools.replica.consumer import Consumer
from django_tools.replica.policy import RetryPolicy
from django_tools.replica.topology import Topology
from django_tools.testing import wait_until

#: Short delays so tests see several retries in a second or two.
FAST_POLICY = RetryPolicy(base=0.3, factor=2.0, cap=1.2, max_retries=3, jitter=0.2)


class RunningConsumers:
    """Consumers in threads (each its own AMQP connection and database connection), as the
    workers of `cqrs_consume -w N` would run."""

    def __init__(self, topology: Topology, url: str) -> None:
        self.topology = topology
        self.url = url
        self.stop = threading.Event()
        self.consumers: list[Consumer] = []
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def start(self, workers: int = 1, **options) -> "RunningConsumers":
        for _ in range(workers):
            consumer = Consumer(self.topology, self.url, stop=self.stop, **options)
            thread = threading.Thread(target=self._run, args=(consumer,), daemon=True)
            self.consumers.append(consumer)
            self.threads.append(thread)
            thread.start()
        return self

    def _run(self, consumer: Consumer) -> None:
        try:
            consumer.run()
        except BaseException as exc:  # surfaced by stop_all()
            self.errors.append(exc)
        finally:
            connections.close_all()

    def stats(self, key: str) -> int:
        return sum(consumer.stats[key] for consumer in self.consumers)

    def stop_all(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)
        assert not any(t.is_alive() for t in self.threads), "a consumer did not stop"
        assert not self.errors, self.errors


def queue_depth(url: str, queue: str) -> int:
    with amqp_channel(url) as channel:
        return channel.queue_declare(queue, passive=True).method.message_count


#: Poll until a condition holds (django_tools.testing.wait_until, 10 s by default).
wait_for = wait_until


def payload(signal_type: str, data: dict, cqrs_id: str = "produto") -> dict:
    """A django-cqrs TransportPayload.to_dict(), as a stock master sends it."""
    return TransportPayload(signal_type, cqrs_id, data, data.get("id")).to_dict()
