"""Where the services live and how each one is started."""

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
