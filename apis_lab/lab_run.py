"""The real `apis up` run as a subprocess on free ports with databases, exchange and queues of its
own (`start_lab`), and single services' `manage.py` on a migrated database (`service_environment`,
`run_manage`); used by the end-to-end tests and the bench."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from apis_lab.broker_objects import replica_queues
from apis_lab.catalogue import FEED, PRODUTOS, REPO_ROOT
from apis_lab.databases import Databases
from apis_lab.net import free_port

#: The `apis` command of the running environment (the venv's script beside its python).
APIS = str(Path(sys.executable).with_name("apis"))


class CommandFailed(Exception):
    """A `manage.py` command of the lab exited non-zero; the message has its output."""


def service_environment(
    service: str,
    tmp: Path,
    rabbitmq_url: str,
    databases: Databases,
    *,
    declare: bool = True,
    **extra: str,
) -> tuple[dict[str, str], str]:
    """A migrated database of its own for `service` ("produtos" or "feed"), and the environment
    to run it with (its own exchange and, for the feed, queue declared); returns (env, db url)."""
    directory = PRODUTOS.directory if service == "produtos" else FEED.directory
    db_url = databases.url_for(service)
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    empty_env_file = tmp / f".env.{service}.empty"
    empty_env_file.write_text("")
    env.update(
        {f"{service.upper()}_ENV_FILE": str(empty_env_file)},
        DATABASE_URL=db_url,
        RABBITMQ_URL=rabbitmq_url,
        CQRS_EXCHANGE=f"e2e_cqrs_{uuid.uuid4().hex[:8]}",
        CQRS_QUEUE=f"e2e_feed_{uuid.uuid4().hex[:8]}",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    declares = service == "feed" and declare
    commands = [["migrate", "--noinput"]] + ([["cqrs_declare"]] if declares else [])
    for command in commands:
        subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=directory, env=env, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    return env, db_url


def run_manage(directory: Path, env: dict[str, str], *args: str, timeout: float = 300) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=directory, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if result.returncode != 0:
        raise CommandFailed(f"manage.py {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


@dataclass
class Lab:
    """A running `apis up`; its output is collected line by line."""

    produtos_url: str
    feed_url: str
    exchange: str
    queue: str
    env: dict[str, str]
    process: subprocess.Popen
    database_urls: dict[str, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        return "\n".join(self.lines)

    def broker_queues(self) -> list[str]:
        """Every queue this lab declared (to delete them afterwards)."""
        celery = [f"{self.queue}.{service}.tasks" for service in ("produtos", "feed")]
        return [*replica_queues(self.queue), *celery]

    def child_pids(self) -> list[int]:
        return [int(pid) for pid in re.findall(r"started \(pid=(\d+)\)", self.output())]

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        for pid in self.child_pids():  # honcho gives each child a session of its own
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        return self.process.returncode


class LabError(Exception):
    """`apis up` did not become ready."""


def start_lab(
    tmp: Path,
    rabbitmq_url: str,
    databases: Databases,
    *extra_args: str,
    api_key: str,
    ready_timeout: float = 90,
    prefix: str = "e2e",
    extra_env: dict[str, str] | None = None,
) -> Lab:
    """The real `apis up` on free loopback ports, with its own databases, exchange and queue;
    returns once both APIs answer /health."""
    produtos_port, feed_port = free_port(), free_port()
    exchange = f"{prefix}_cqrs_{uuid.uuid4().hex[:8]}"
    queue = f"{prefix}_feed_{uuid.uuid4().hex[:8]}"
    env_files, database_urls = {}, {}
    for service, extra in (("produtos", f"PRODUTOS_API_KEY={api_key}\n"), ("feed", "")):
        database_urls[service] = databases.url_for(service)
        path = tmp / f".env.{service}"
        path.write_text(f"DATABASE_URL={database_urls[service]}\n{extra}")
        env_files[f"{service.upper()}_ENV_FILE"] = str(path)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PRODUTOS_API_KEY")}
    env.update(env_files)
    env.update(
        RABBITMQ_URL=rabbitmq_url,
        CQRS_EXCHANGE=exchange,
        CQRS_QUEUE=queue,
        CELERY_QUEUE_PREFIX=f"{queue}.",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env or {})
    process = subprocess.Popen(
        [APIS, "up", "--host", "127.0.0.1",
         "--produtos-port", str(produtos_port), "--feed-port", str(feed_port), *extra_args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    lab = Lab(
        produtos_url=f"http://127.0.0.1:{produtos_port}",
        feed_url=f"http://127.0.0.1:{feed_port}",
        exchange=exchange,
        queue=queue,
        env=env,
        process=process,
        database_urls=database_urls,
    )
    threading.Thread(target=_collect, args=(process, lab.lines), daemon=True).start()
    deadline = time.monotonic() + ready_timeout
    while "apis up: ready" not in lab.output():
        if process.poll() is not None or time.monotonic() > deadline:
            lab.stop()
            raise LabError(f"`apis up` did not become ready; its output:\n{lab.output()[-5000:]}")
        time.sleep(0.1)
    return lab


def _collect(process: subprocess.Popen, lines: list[str]) -> None:
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
