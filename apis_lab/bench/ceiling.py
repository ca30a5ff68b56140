"""The broker's own ceiling on this machine, measured in the same run as the pipelines.

One process publishes N persistent messages the size of a `produto` event to a queue of its
own (of the type the project's queues have), without publisher confirms; another consumes them
with a prefetch window and multiple acks.
No database, no parsing, no confirms: an upper bound for any pipeline that carries one persistent
message per event through this broker, which puts "N times stock" targets in proportion.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
import uuid
from dataclasses import dataclass
from queue import Empty

import pika

from django_tools import pika_writes

_PREFETCH = 500
_ACK_EVERY = 100
#: The broker never looks inside a body, only at its size: a `produto` SAVE event is ~430 bytes.
_BODY = b"x" * 430


@dataclass(frozen=True)
class Ceiling:
    n: int
    end_to_end_per_s: float


def _consume(url: str, queue: str, n: int, ready, finished) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=_PREFETCH)
    ready.set()
    received = 0
    for method, _, _ in channel.consume(queue, inactivity_timeout=30):
        if method is None:
            break  # the publisher died; the parent reports the shortfall
        received += 1
        if received % _ACK_EVERY == 0 or received == n:
            channel.basic_ack(method.delivery_tag, multiple=True)
        if received == n:
            break
    finished.put((received, time.time()))
    connection.close()


def _publish(url: str, queue: str, n: int, published, done) -> None:
    pika_writes.install()  # what the project's relay does: one send() per flush, not per frame
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    properties = pika.BasicProperties(delivery_mode=2, content_type="text/plain")
    started = time.time()
    for _ in range(n):
        channel.basic_publish("", queue, _BODY, properties)
    published.put(started)
    # Open until the consumer has them all: without confirms, what a quorum queue had not
    # applied yet when the publishing channel closed was lost (seen: 39,952 of 40,000).
    deadline = time.monotonic() + 120
    while not done.is_set() and time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.2)
    connection.close()


def measure(url: str, n: int, queue_type: str = "classic", timeout: float = 120.0) -> Ceiling:
    """Raises RuntimeError when the broker did not carry all N messages in time."""
    spawn = multiprocessing.get_context("spawn")
    queue = f"apis-bench-ceiling-{uuid.uuid4().hex[:8]}"
    ready, finished, published = spawn.Event(), spawn.Queue(), spawn.Queue()
    done = spawn.Event()
    connection = pika.BlockingConnection(pika.URLParameters(url))
    processes = []
    try:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": queue_type})
        consumer = spawn.Process(target=_consume, args=(url, queue, n, ready, finished))
        consumer.start()
        processes.append(consumer)
        if not ready.wait(timeout):
            raise RuntimeError("the ceiling's consumer did not start")
        publisher = spawn.Process(target=_publish, args=(url, queue, n, published, done))
        publisher.start()
        processes.append(publisher)
        try:
            started = published.get(timeout=timeout)
            received, last = finished.get(timeout=timeout)
        except Empty:
            raise RuntimeError(f"the broker did not carry {n} messages in {timeout:.0f}s") from None
        if received < n:
            raise RuntimeError(f"the broker delivered {received} of {n} messages")
    finally:
        done.set()
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
        with contextlib.suppress(Exception):
            connection.channel().queue_delete(queue)
        with contextlib.suppress(Exception):
            connection.close()
    return Ceiling(n=n, end_to_end_per_s=n / max(last - started, 1e-9))
