"""The replication pipelines the fault suite can run: which processes a run starts, and so which
fault kinds mean something for it (a kind acting on a role the pipeline lacks is skipped and
listed in the report).

Today only `project` (this project's pipeline: transactional outbox, relay, batching consumer);
another pipeline joins by subclassing `Pipeline` and registering in `PIPELINES`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from apis_lab.chaos import crash_hook
from apis_lab.databases import Databases
from apis_lab.supervised_ecosystem import Ecosystem


@dataclass
class Setup:
    """What the suite prepared for the pipeline: where its files go, the broker URL its
    processes use (through the suite's proxies) and the one the suite's checks use, Redis, the
    databases, and settings for every process."""

    work: Path
    broker_url: str
    lab_url: str
    redis_url: str
    databases: Databases
    env: dict[str, str] = field(default_factory=dict)
    consumers: int = 1
    consumer_processes: int = 1
    relays: int = 1


class Pipeline:
    name: ClassVar[str]
    #: Process roles it runs: `web`, `relay`, `consumer`, `celery`, `redis`.
    roles: ClassVar[frozenset[str]]

    def start(self, setup: Setup) -> Ecosystem:
        raise NotImplementedError


class ProjectPipeline(Pipeline):
    """Both APIs, the outbox relay, `cqrs_consume`, each service's Celery worker and beat: the
    processes `apis up` runs. The consumer (and only it) gets the lab's crash-loop hook."""

    name = "project"
    roles = frozenset({"web", "relay", "consumer", "celery", "redis"})

    def start(self, setup: Setup) -> Ecosystem:
        python_path = os.pathsep.join(
            part for part in (crash_hook.FOLDER, os.environ.get("PYTHONPATH", "")) if part
        )
        return Ecosystem(
            setup.work, setup.broker_url, setup.redis_url, setup.databases,
            extra_env=setup.env, consumers=setup.consumers,
            consumer_processes=setup.consumer_processes, relays=setup.relays,
            lab_url=setup.lab_url,
            role_env={"consumer": {"PYTHONPATH": python_path, **crash_hook.environment()}},
        ).start()  # fmt: skip


PIPELINES: dict[str, type[Pipeline]] = {pipeline.name: pipeline for pipeline in (ProjectPipeline,)}
