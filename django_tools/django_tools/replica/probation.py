"""Messages that kill their worker: how the consumer recognises one and sets it aside.

A message can make the process handling it die instead of failing (a segfault in a C
extension, an out-of-memory kill on one huge message, a library that calls `os._exit`): no
exception is raised, nothing classifies it. The broker gives it back, with every other message
the worker had prefetched, `cqrs_consume` starts another worker, the message is delivered
again, and kills again — for ever on RabbitMQ 3.x (the queue stalls behind it), or until a
delivery limit drops it on RabbitMQ 4.x (quorum queues default to 20).

So a message delivered again (the broker's `redelivered` flag, or `x-delivery-count` > 0 on a
quorum queue) is handled on *probation*: alone, after a marker of it is written (a small file
named after a hash of its queue and body, holding how many times it was tried alone), removed
once it is acknowledged. A marker found at its next delivery means the worker that tried it
died. Once the deliveries that ended that way reach CQRS_MAX_DELIVERIES, the message is set
aside unread (not even decoded): a copy to the dead-letter queue with reason `redelivered` and
its count (`x-cqrs-deliveries`), then it is acknowledged. The messages that were only
prefetched beside it come back redelivered too: each is tried alone, applied, and its marker
removed, so an innocent message is never set aside for its neighbour's crash.

The count: the first delivery (in a batch, no marker) plus the probation tries that did not end,
or the broker's own count (quorum queues) when that is higher — a queue consumed from several
hosts, each with its markers. At least one probation try must have died: a message the broker
gave back for other reasons (a consumer restart, a lost connection) is never set aside for them.

Markers live in the worker's host (`CQRS_PROBATION_DIR`, by default a folder of HEARTBEAT_DIR):
a process's death, not the machine's, is what they must survive, so they are not fsynced. On a
broker with a delivery limit (`CQRS_DELIVERY_LIMIT`, larger than CQRS_MAX_DELIVERIES) the queue
dead-letters to the same dead-letter queue whatever happens to the markers.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from pika import BasicProperties

from django_tools.replica.failures import delivery_count

logger = logging.getLogger("django_tools.replica")

#: Deliveries of a message that may end with its worker dead before it is set aside: one is a
#: crash, two in a row (one of them with the message alone) is a pattern; each costs a worker
#: restart (a second or two of the queue stalled), so not more.
MAX_DELIVERIES = 3
#: A marker older than this is of a message gone some other way (purged, consumed on another
#: host): pruned when a worker starts.
MARKER_MAX_AGE = 7 * 24 * 3600.0


def suspect(redelivered: bool, properties: BasicProperties | None) -> bool:
    """Whether a delivery may be of a message that killed a worker: delivered before."""
    return redelivered or bool(delivery_count(properties))


def decide(tried: int, broker_count: int | None, max_deliveries: int) -> tuple[int, bool]:
    """(deliveries that ended without the message done, whether to set it aside) for a message
    delivered again after `tried` probation tries that did not end, and `broker_count` earlier
    deliveries by the broker's count (None: the broker keeps none)."""
    deliveries = max(tried + 1, broker_count or 0)
    return deliveries, tried >= 1 and deliveries >= max_deliveries


@dataclass(frozen=True)
class Trial:
    """One delivery on probation."""

    key: str
    #: Deliveries of the message that ended without it done (see `decide`).
    deliveries: int
    set_aside: bool


class Probation:
    def __init__(self, directory: Path | None, max_deliveries: int = MAX_DELIVERIES) -> None:
        if max_deliveries < 2:
            raise ValueError(
                f"CQRS_MAX_DELIVERIES={max_deliveries}: at least 2 (one death may be anything)"
            )
        self.directory = directory
        self.max_deliveries = max_deliveries
        self._failed = False

    @classmethod
    def from_settings(cls) -> Probation:
        from django.conf import settings

        from django_tools.heartbeat import heartbeat_dir

        replica = settings.CQRS.get("replica", {})
        directory = replica.get("probation_dir") or heartbeat_dir() / "probation"
        return cls(Path(directory), int(replica.get("max_deliveries") or MAX_DELIVERIES))

    @staticmethod
    def key(queue: str, body: bytes) -> str:
        """The marker's name: the same for the same body from the same queue on every delivery
        (other replicas on the host, with their own queues, have their own)."""
        return hashlib.sha256(queue.encode() + b"\0" + body).hexdigest()[:32]

    def begin(self, queue: str, body: bytes, properties: BasicProperties | None) -> Trial:
        """Before a delivery from `queue` on probation is handled: its trial, and unless it is
        to be set aside, its marker written (one more try)."""
        key = self.key(queue, body)
        tried = self._tried(key)
        deliveries, set_aside = decide(tried, delivery_count(properties), self.max_deliveries)
        if not set_aside:
            self._write(key, tried + 1)
        return Trial(key, deliveries, set_aside)

    def end(self, trial: Trial) -> None:
        """The delivery is acknowledged (applied, retried, dead-lettered or set aside)."""
        if self.directory is not None:
            with contextlib.suppress(OSError):
                (self.directory / trial.key).unlink()

    def prune(self, max_age: float = MARKER_MAX_AGE) -> None:
        if self.directory is None:
            return
        now = time.time()
        with contextlib.suppress(OSError):
            for path in self.directory.iterdir():
                with contextlib.suppress(OSError):
                    if now - path.stat().st_mtime > max_age:
                        path.unlink()

    def _tried(self, key: str) -> int:
        if self.directory is None:
            return 0
        try:
            text = (self.directory / key).read_text()
        except FileNotFoundError:
            return 0
        except OSError:
            return 0
        try:
            return max(1, int(text.strip()))
        except ValueError:
            return 1  # a marker half written by a worker that died writing it: it was tried

    def _write(self, key: str, tried: int) -> None:
        if self.directory is None:
            return
        path = self.directory / key
        temporary = path.with_name(f".{key}.{os.getpid()}.tmp")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            temporary.write_text(f"{tried}\n")
            os.replace(temporary, path)
        except OSError as exc:
            if not self._failed:
                logger.warning(
                    "cannot write probation markers in %s (%s): a message that kills its worker "
                    "is left to the broker's delivery limit",
                    self.directory, exc,
                )  # fmt: skip
                self._failed = True
            with contextlib.suppress(OSError):
                temporary.unlink()
        else:
            self._failed = False
