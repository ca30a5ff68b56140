"""The peer outbox libraries the lab measures beside this project (issue 23): what a Django team
that wants a transactional outbox would install instead. One module per peer, each holding

- `Bench`: its `apis_lab.bench.pipelines.Pipeline` (writer, relay, consumer, queues), and
- `Chaos`: its `apis_lab.chaos.pipelines.Pipeline` (the processes the fault suite runs),

set up the way the library's own documentation says to use it. They import the peer libraries
(the `lab` dependency group) only when a run asks for them: the services never do.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: Pipeline name → the module that holds it, in the order the reports show them.
PEERS: dict[str, str] = {
    "outbox-pattern": "apis_lab.peers.outbox_pattern",
    "jaiminho": "apis_lab.peers.jaiminho",
    "celery-outbox": "apis_lab.peers.celery_outbox",
}


def peer_module(name: str) -> ModuleType:
    return importlib.import_module(PEERS[name])
