"""`Ecosystem`: every process `apis up` runs, each supervised by the lab (`supervision`) on a
broker, Redis and databases the lab owns; used by the fault suite (`apis chaos`) and the broker
permission tests.

The processes are both APIs under gunicorn, the relay, the consumer, each service's Celery worker
and beat. `rabbitmq_url` is what they connect to (the fault suite gives them its proxies, so that
it can black-hole their links); `lab_url`, what the lab's own checks use (the broker itself, which
no fault of the links touches)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from apis_lab.catalogue import FEED, PRODUTOS, EcosystemOptions, processes
from apis_lab.databases import Databases, ServiceDatabase
from apis_lab.net import free_port
from apis_lab.supervision import Supervised
from django_tools.broker import blocking_connection

API_KEY = "lab-key"
READY_TIMEOUT = 90.0


class EcosystemError(Exception):
    """The ecosystem did not start; the message says which part and where its log is."""


@dataclass
class Ecosystem:
    work: Path
    rabbitmq_url: str
    redis_url: str
    databases: Databases
    consumers: int = 1  # workers of each cqrs_consume process
    consumer_processes: int = 1  # cqrs_consume processes on the one queue
    relays: int = 1  # outbox relays: one publishes, the others stand by
    web_workers: int = 2
    extra_env: dict[str, str] = field(default_factory=dict)
    #: role → variables only that role's processes get (`consumer`: also `consumer-2`, …).
    role_env: dict[str, dict[str, str]] = field(default_factory=dict)
    lab_url: str = ""  # default: rabbitmq_url
    #: `processes()`'s replication mode: `cqrs` (a django-cqrs consumer) or `celery`.
    mode: str = "cqrs"
    #: Process name → the command it runs instead of `apis up`'s, or None: not run at all (the
    #: fault suite's other pipelines).
    replace: dict[str, list[str] | None] = field(default_factory=dict)
    #: Runs after `prepare()`, before any process starts (a peer library migrates its tables
    #: under its own settings).
    after_prepare: Callable[[Ecosystem], None] | None = None
    produtos_port: int = field(default_factory=free_port)
    feed_port: int = field(default_factory=free_port)
    exchange: str = field(default_factory=lambda: f"lab_cqrs_{uuid.uuid4().hex[:8]}")
    queue: str = field(default_factory=lambda: f"lab_feed_{uuid.uuid4().hex[:8]}")
    envs: dict[str, dict[str, str]] = field(default_factory=dict)
    database_urls: dict[str, str] = field(default_factory=dict)
    processes: dict[str, Supervised] = field(default_factory=dict)
    service_of: dict[str, str] = field(default_factory=dict)  # process name → service name

    @property
    def produtos_url(self) -> str:
        return f"http://127.0.0.1:{self.produtos_port}"

    @property
    def feed_url(self) -> str:
        return f"http://127.0.0.1:{self.feed_port}"

    def named(self, role: str) -> list[Supervised]:
        """Every process of a role: `consumer`, `consumer-2`, …"""
        return [
            process
            for name, process in self.processes.items()
            if name == role or (name.startswith(f"{role}-") and name[len(role) + 1 :].isdigit())
        ]

    @property
    def queue_consumers(self) -> int:
        """How many consumers the replica's queue must have."""
        return self.consumers * self.consumer_processes

    @property
    def dead_letter_queue(self) -> str:
        return f"dead_letter_{self.queue}"

    def database(self, service: str) -> ServiceDatabase:
        return ServiceDatabase(self.database_urls[service])

    def set_env(self, service: str, **values: str) -> None:
        """Change a service's settings for every process of it started from now on (a deploy
        with new settings: each process takes them at its next start)."""
        self.envs[service].update(values)
        for name, process in self.processes.items():
            if self.service_of[name] == service:
                process.env.update(values)

    # --- start ---------------------------------------------------------------------------

    def prepare(self) -> None:
        """Databases migrated and the broker topology declared, as `apis up` does first."""
        metrics_root = Path(tempfile.mkdtemp(prefix="metrics-", dir=self.work))
        for service in (PRODUTOS, FEED):
            self.database_urls[service.name] = self.databases.url_for(service.name)
            empty_env_file = self.work / f".env.{service.name}.none"
            empty_env_file.write_text("")
            metrics_dir = metrics_root / service.name
            metrics_dir.mkdir()
            env = {
                k: v
                for k, v in os.environ.items()
                if k not in ("DATABASE_URL", "PRODUTOS_API_KEY", "DJANGO_SETTINGS_MODULE")
            }
            env.update(
                {f"{service.name.upper()}_ENV_FILE": str(empty_env_file)},
                DATABASE_URL=self.database_urls[service.name],
                RABBITMQ_URL=self.rabbitmq_url,
                REDIS_URL=self.redis_url,
                CQRS_EXCHANGE=self.exchange,
                CQRS_QUEUE=self.queue,
                CELERY_QUEUE_PREFIX=f"{self.queue}.",
                PRODUTOS_API_KEY=API_KEY,
                FEED_URL=self.feed_url,
                PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
                PYTHONUNBUFFERED="1",
            )
            env.update(self.extra_env)
            self.envs[service.name] = env
        for service, args in (
            (PRODUTOS, ["migrate"]),
            (FEED, ["migrate"]),
            (FEED, ["cqrs_declare"]),
        ):
            result = subprocess.run(
                service.manage(*args, *(["--noinput"] if args == ["migrate"] else [])),
                cwd=service.directory, env=self.envs[service.name], capture_output=True,
                text=True, timeout=180,
            )  # fmt: skip
            if result.returncode != 0:
                raise EcosystemError(
                    f"{service.name} {' '.join(args)} failed: {result.stderr.strip()[-800:]}"
                )

    def start(self) -> Ecosystem:
        self.prepare()
        if self.after_prepare is not None:
            self.after_prepare(self)
        state_dir = tempfile.mkdtemp(prefix="beat-", dir=self.work)
        options = EcosystemOptions(
            host="127.0.0.1",
            produtos_port=self.produtos_port,
            feed_port=self.feed_port,
            web_workers=self.web_workers,
            consumers=self.consumers,
        )
        commands = processes(options, state_dir, self.mode, envs=self.envs)
        for name, command in self.replace.items():
            if command is None:
                commands.pop(name, None)
            else:
                commands[name] = (command, commands[name][1])
        for role, count in (("consumer", self.consumer_processes), ("relay", self.relays)):
            for number in range(2, count + 1):
                commands[f"{role}-{number}"] = commands[role]
        for name, (command, service) in commands.items():
            role = name.rsplit("-", 1)[0] if name.rsplit("-", 1)[-1].isdigit() else name
            self.processes[name] = Supervised(
                name=name,
                argv=command,
                cwd=service.directory,
                env={**self.envs[service.name], **self.role_env.get(role, {})},
                log=self.work / f"{name}.log",
            ).start()
            self.service_of[name] = service.name
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        pending = {"produtos": self.produtos_url, "feed": self.feed_url}
        while pending:
            for name, base in list(pending.items()):
                with (
                    contextlib.suppress(OSError),
                    urllib.request.urlopen(f"{base}/health", timeout=3) as response,  # nosec B310 # http URL of the lab
                ):
                    if response.status == 200:
                        del pending[name]
            dead = [p.name for p in self.processes.values() if not p.alive()]
            if dead or time.monotonic() > deadline:
                what = f"{', '.join(dead)} died" if dead else f"{', '.join(pending)} not healthy"
                logs = "\n".join(f"--- {n}:\n{self.processes[n].tail(15)}" for n in dead or pending)
                raise EcosystemError(f"the ecosystem did not start ({what}):\n{logs}")
            time.sleep(0.2)

    # --- what the broker says -------------------------------------------------------------

    def queue_state(self, queue: str | None = None) -> tuple[int, int] | None:
        """(messages, consumers) of a queue, or None when the broker cannot tell."""
        try:
            connection = blocking_connection(
                self.lab_url or self.rabbitmq_url, socket_timeout=5, stack_timeout=5,
                blocked_connection_timeout=5,
            )  # fmt: skip
        except Exception:
            return None
        try:
            method = connection.channel().queue_declare(queue or self.queue, passive=True).method
            return method.message_count, method.consumer_count
        except Exception:
            return None
        finally:
            with contextlib.suppress(Exception):
                connection.close()

    def manage_argv(self, service: str, *args: str) -> list[str]:
        return [sys.executable, str(self.service_dir(service) / "manage.py"), *args]

    @staticmethod
    def service_dir(service: str) -> Path:
        return (PRODUTOS if service == PRODUTOS.name else FEED).directory

    def manage(self, service: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.manage_argv(service, *args),
            cwd=self.service_dir(service), env=self.envs[service], capture_output=True,
            text=True, timeout=timeout,
        )  # fmt: skip

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.stop()
