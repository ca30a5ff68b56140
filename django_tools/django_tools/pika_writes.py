"""Fewer system calls for what pika sends.

pika buffers every frame on its own (a published message is three: method, header, body) and
its transport then calls `socket.send()` once per buffered frame. Publishing a batch of 500
messages is 1,500 system calls, and profiling the relay showed them as more than half of its
time. `install()` makes the transport join whatever is buffered into one `send()` (at most
`MAX_JOIN` bytes at a time): the same bytes, in the same order, on the same socket.

Installed by the relay when it starts (`AmqpRelay.run`), never on import: a process that only
imports the outbox (a web worker, a Celery worker) keeps pika as it is.
"""

from __future__ import annotations

from pika.adapters.utils import io_services_utils

from django_tools.pika_support import UnsupportedPika, require

#: Join at most this much at once (a partial send re-queues the rest, as pika does).
MAX_JOIN = 1 << 20

_original_produce = None  # pika's own `_produce`, once installed


def _joined_produce(self) -> None:
    buffers = self._tx_buffers
    if len(buffers) > 1:
        joined, size = [], 0
        while buffers and size < MAX_JOIN:
            chunk = buffers.popleft()
            joined.append(chunk)
            size += len(chunk)
        buffers.appendleft(b"".join(joined))
    _original_produce(self)


def supported() -> None:
    """Raise `UnsupportedPika` unless this pika is one the patch was written for: in the
    supported range, with a transport whose `_produce` sends from `self._tx_buffers`."""
    require("pika_writes", (io_services_utils, "_AsyncTransportBase"))
    transport = io_services_utils._AsyncTransportBase
    require("pika_writes", (transport, "_produce"))
    produce = _original_produce or transport._produce
    if "_tx_buffers" not in produce.__code__.co_names:
        raise UnsupportedPika("pika_writes: _AsyncTransportBase._produce sends no _tx_buffers")


def installed() -> bool:
    return io_services_utils._AsyncTransportBase._produce is _joined_produce


def install() -> None:
    """Join the buffered frames of every pika connection of this process before sending them
    (plain TCP; pika's TLS transport has its own `_produce` and is left as it is). Idempotent;
    raises `UnsupportedPika` on a pika the patch was not written for."""
    global _original_produce
    if installed():
        return
    supported()
    _original_produce = io_services_utils._AsyncTransportBase._produce
    io_services_utils._AsyncTransportBase._produce = _joined_produce
