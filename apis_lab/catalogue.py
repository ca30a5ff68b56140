"""The catalogue of the ecosystem: each service (folder, env file) and the command of every process
`apis up` runs; used by `apis up`, `apis reconcile`, the supervised ecosystem (`apis chaos`), the
bench and the tests (the containers run the same commands)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from django_tools.env import read_service_env

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Service:
    name: str  # the env-file suffix: .env.<name>
    directory: Path
    project: str  # the Django project package
    default_port: int

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a child process of this service gets: ours, plus its env file
        (real variables still win, as the service's settings read it)."""
        values = read_service_env(self.name, REPO_ROOT)
        values.update(extra)
        values.setdefault("PYTHONUNBUFFERED", "1")
        return values

    def manage(self, *args: str) -> list[str]:
        return [sys.executable, str(self.directory / "manage.py"), *args]


PRODUTOS = Service("produtos", REPO_ROOT / "api_produtos", "api_produtos", 8001)
FEED = Service("feed", REPO_ROOT / "api_feed", "api_feed", 8000)
SERVICES = (PRODUTOS, FEED)


@dataclass(frozen=True)
class EcosystemOptions:
    """What `apis up` lets you choose about its processes."""

    host: str = "127.0.0.1"
    produtos_port: int = 8001
    feed_port: int = 8000
    web_workers: int = 4
    consumers: int = 2  # cqrs_consume's default: see docs/desempenho.md


def gunicorn(service: Service, host: str, port: int, workers: int) -> list[str]:
    return (
        [
            sys.executable, "-m", "gunicorn", f"{service.project}.wsgi:application",
            "--chdir", str(service.directory),
            # Bound off loopback, it refuses to start with public defaults (one line).
            "--config", "python:django_tools.chassis.gunicorn_conf",
            "--bind", f"{host}:{port}",
            "--workers", str(workers),
            "--graceful-timeout", "5",
            "--no-control-socket",
            "--preload",
        ]
    )  # fmt: skip


def celery(
    service: Service, role: str, state_dir: str, concurrency: int = 1, env: dict | None = None
) -> list[str]:
    """A service's Celery worker (its own queue) or beat (its schedule file in `state_dir`)."""
    command = [sys.executable, "-m", "celery", "-A", service.project, role, "-l", "INFO"]
    if role == "worker":
        prefix = (service.env() if env is None else env).get("CELERY_QUEUE_PREFIX", "")
        queue = f"{prefix}{service.name}.tasks"
        command += ["--concurrency", str(concurrency), "-n", f"{service.name}@%h", "-Q", queue]
    else:
        command += ["--schedule", f"{state_dir}/beat-{service.name}"]
    return command


def processes(
    options: EcosystemOptions, state_dir: str, mode: str, envs: dict[str, dict] | None = None
) -> dict[str, tuple[list[str], Service]]:
    """Name → (command, service whose folder and environment it runs in). In celery mode
    the feed's Celery worker applies the changes, and there is no django-cqrs consumer.
    `envs` (service name → environment) when the processes will not run with the services'
    own environment (the fault suite's lab)."""
    envs = envs or {}
    consume = FEED.manage("cqrs_consume", "-w", str(options.consumers))
    feed_worker_concurrency = options.consumers if mode == "celery" else 1
    return {
        "produtos": (
            gunicorn(PRODUTOS, options.host, options.produtos_port, options.web_workers),
            PRODUTOS,
        ),
        "feed": (gunicorn(FEED, options.host, options.feed_port, options.web_workers), FEED),
        "relay": (PRODUTOS.manage("outbox_relay"), PRODUTOS),
        **({"consumer": (consume, FEED)} if mode == "cqrs" else {}),
        "produtos-worker": (
            celery(PRODUTOS, "worker", state_dir, env=envs.get(PRODUTOS.name)),
            PRODUTOS,
        ),
        "produtos-beat": (celery(PRODUTOS, "beat", state_dir), PRODUTOS),
        "feed-worker": (
            celery(FEED, "worker", state_dir, feed_worker_concurrency, env=envs.get(FEED.name)),
            FEED,
        ),
        "feed-beat": (celery(FEED, "beat", state_dir), FEED),
    }
