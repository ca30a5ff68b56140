"""RabbitMQ and Redis for `apis up`, as RABBITMQ_URL and REDIS_URL name them.

What answers at a URL is used as it is. When a URL points at this machine (loopback) and nothing
listens on its port, `apis up` starts a private server there and stops it on exit: with Docker
(CLI and engine answering) and the compose file's port, compose's service; otherwise a RabbitMQ
node (management plugin, the URL's user as administrator, on its vhost) and a Redis server from
the installed rabbitmq-server / redis-server, their data under `var/infra/` kept across runs.
The machine's own servers are never touched: a port something listens on is never started on.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pika
from redis.connection import parse_url

from apis_lab.catalogue import REPO_ROOT
from apis_lab.net import free_port
from apis_lab.private_files import write_private
from apis_lab.rabbit_nodes import BrokerUnavailable, RabbitNode, server_installed
from apis_lab.redis_server import RedisServer, RedisUnavailable
from django_tools.connectivity import Unreachable, probe_rabbitmq, probe_redis
from django_tools.env import redact_url

#: Where the private servers keep their data (var/ is git-ignored); APIS_INFRA_DIR moves it
#: (the tests' servers live in a folder of their own).
INFRA_DIR = REPO_ROOT / "var" / "infra"
RABBITMQ, REDIS = "RabbitMQ", "Redis"
VARIABLES = {RABBITMQ: "RABBITMQ_URL", REDIS: "REDIS_URL"}
PACKAGES = {RABBITMQ: "rabbitmq-server", REDIS: "redis-server"}
#: The ports docker-compose.yaml publishes each service on (127.0.0.1 only), and its services.
COMPOSE_PORTS = {RABBITMQ: 5672, REDIS: 6379}
COMPOSE_SERVICES = {RABBITMQ: "rabbitmq", REDIS: "redis"}
#: What a user told to start the infrastructure can do, with Docker or without.
START_HINT = (
    "start it with `docker compose up -d`, or without Docker install rabbitmq-server and "
    "redis-server (apt-get install rabbitmq-server redis-server) and run `apis up` without "
    "--no-infra: it starts private ones"
)
#: The broker user the defaults need, on a RabbitMQ of the machine's own (guest only by default).
ADMIN_USER_HINT = (
    "create the user: sudo rabbitmqctl add_user admin admin && sudo rabbitmqctl set_user_tags "
    "admin administrator && sudo rabbitmqctl set_permissions -p / admin '.*' '.*' '.*'"
)
#: Decisions: what answers is used; a private server from the installed binary or compose.
USE, BINARY, COMPOSE = "use", "binary", "compose"


class InfraProblem(Exception):
    """The infrastructure is missing and `apis up` will not (or cannot) start it: one line."""


@dataclass(frozen=True)
class Endpoint:
    """A server as a URL names it (its first node, for RabbitMQ)."""

    label: str  # RABBITMQ or REDIS
    url: str
    host: str
    port: int
    user: str | None
    password: str | None
    vhost: str = "/"
    #: Several RabbitMQ nodes: a cluster, never started by `apis up`.
    several: bool = False

    @property
    def variable(self) -> str:
        return VARIABLES[self.label]

    @property
    def on_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:
            return False


def endpoint(label: str, url: str) -> Endpoint:
    """The URL as its client library reads it; one that it cannot read stops here, in a line
    that quotes none of it but the redacted URL (a parser's own words may hold a password)."""
    nodes = [part.strip() for part in url.split(",") if part.strip()]
    try:
        if label == RABBITMQ:
            params = pika.URLParameters(nodes[0])
            return Endpoint(
                label, url, params.host, params.port,
                params.credentials.username, params.credentials.password,
                params.virtual_host, several=len(nodes) > 1,
            )  # fmt: skip
        options = parse_url(nodes[0])
        return Endpoint(
            label, url, options.get("host") or "localhost", int(options.get("port") or 6379),
            options.get("username"), options.get("password"),
        )  # fmt: skip
    except Exception as exc:  # each parser raises its own types for a malformed URL
        raise InfraProblem(
            f"{VARIABLES[label]}={redact_url(url)!r} cannot be read ({type(exc).__name__}): "
            f"use {'amqp://user:password@host:5672/vhost' if label == RABBITMQ else 'redis://[:password@]host:6379/0'}"
            ", with a `/`, `?`, `#` or `@` of a password percent-encoded"
        ) from None


def listening(host: str, port: int, timeout: float = 1.0) -> bool:
    """Something accepts TCP connections there (whatever it is)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def docker_available() -> bool:
    """The docker CLI is installed and its engine answers."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        result = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def decide(
    point: Endpoint, reason: str | None, *, listens: bool, no_infra: bool, docker: bool
) -> str:
    """USE (it answered: `reason` None), BINARY or COMPOSE (start a private one), or an
    InfraProblem saying what to do instead."""
    if reason is None:
        return USE
    where = f"{point.label} is not reachable at {redact_url(point.url)} ({reason})"
    if no_infra:
        raise InfraProblem(f"{where}: {START_HINT}")
    if point.several:
        raise InfraProblem(f"{where}: several nodes in {point.variable} are a cluster to start")
    if not point.on_loopback:
        raise InfraProblem(
            f"{where}: it is not on this machine, so `apis up` starts nothing; start it there, "
            f"or point {point.variable} at 127.0.0.1 for a private one"
        )
    if listens:
        # Something of the machine's answers there: never started over, never reconfigured.
        hint = ADMIN_USER_HINT if point.label == RABBITMQ else f"check {point.variable}"
        raise InfraProblem(f"{where}, and something else listens on that port: {hint}")
    if point.port < 1024:
        raise InfraProblem(f"{where}: a private server needs a port above 1023 there")
    if point.host.startswith("[") or ":" in point.host:
        raise InfraProblem(f"{where}: a private server listens on 127.0.0.1: use that host")
    if docker and point.port == COMPOSE_PORTS[point.label]:
        return COMPOSE
    return BINARY


def _probe(point: Endpoint) -> str | None:
    """None when the server answers as the URL says, else why not."""
    probe = probe_rabbitmq if point.label == RABBITMQ else probe_redis
    try:
        probe(point.url, timeout=3)
    except Unreachable as exc:
        return str(exc) or "no answer"
    return None


@dataclass
class Infrastructure:
    """What `apis up` started (none of it when everything answered); `stop()` undoes it."""

    root: Path = field(default_factory=lambda: Path(os.environ.get("APIS_INFRA_DIR") or INFRA_DIR))
    say: Callable[[str], None] = print
    rabbit_nodes: list[RabbitNode] = field(default_factory=list)
    redis_servers: list[RedisServer] = field(default_factory=list)
    compose_services: list[str] = field(default_factory=list)

    def ensure(self, urls: list[tuple[str, str]], *, no_infra: bool) -> None:
        """Every (label, url): used if it answers, else started (or an InfraProblem)."""
        docker: bool | None = None
        for label, url in urls:
            point = endpoint(label, url)
            reason = _probe(point)
            if reason is not None and not no_infra and docker is None:
                docker = docker_available()
            listens = reason is not None and listening(point.host, point.port)
            ours = next((n for n in self.rabbit_nodes if n.port == point.port), None)
            if listens and ours is not None and label == RABBITMQ:
                # A node started for another service's URL: this URL's user too.
                self._add_user(ours, point)
                continue
            action = decide(point, reason, listens=listens, no_infra=no_infra, docker=bool(docker))
            if action == COMPOSE:
                self._compose(point)
            elif action == BINARY:
                self._start(point)
            if action != USE and (reason := _probe(point)) is not None:
                raise InfraProblem(
                    f"the private {label} at {redact_url(url)} does not answer ({reason})"
                )

    def management_url(self) -> str | None:
        """The private RabbitMQ node's management UI (the first one started)."""
        return self.rabbit_nodes[0].management_url if self.rabbit_nodes else None

    def _start(self, point: Endpoint) -> None:
        # Nothing said about starting what is not installed: one line saying what to install.
        try:
            if point.label == RABBITMQ:
                server_installed()
            elif shutil.which("redis-server") is None:
                raise RedisUnavailable("`redis-server` is not installed")
        except (BrokerUnavailable, RedisUnavailable):
            raise InfraProblem(
                f"{point.label} is not reachable at {redact_url(point.url)} and "
                f"`{PACKAGES[point.label]}` is not installed: apt-get install rabbitmq-server "
                "redis-server (then `apis up` starts its own), or `docker compose up -d`"
            ) from None
        if point.label == RABBITMQ:
            self._start_rabbitmq(point)
        else:
            self._start_redis(point)

    def _start_rabbitmq(self, point: Endpoint) -> None:
        # A folder and a node name per port (its data is mnesia/<node>): the next run on the
        # same URL finds its users, queues and messages again, and two runs on two ports
        # share no configuration or pid file.
        base = self.root / "rabbitmq" / str(point.port)
        base.mkdir(parents=True, exist_ok=True)
        node = RabbitNode(
            name=f"apis{point.port}",
            port=point.port,
            cookie=_kept_cookie(base / "cookie"),
            base=base,
            user=point.user or "guest",
            password=point.password or "guest",
            vhost=point.vhost,
            management_port=_management_port(point.port),
            keep_data=True,
        )
        self.say(
            f"apis up: nothing answers at {redact_url(point.url)}: starting a private RabbitMQ "
            f"node from rabbitmq-server on 127.0.0.1:{point.port} (user {node.user}, management "
            f"UI {node.management_url}, data in {_shown(base)}); it stops with the rest"
        )
        self.rabbit_nodes.append(node)  # stopped by `stop()` even if the start fails half-way
        try:
            node.start()
            if _probe(point) is not None:
                node.ensure_user()  # data of an earlier run, for another user or password
        except BrokerUnavailable as exc:
            raise InfraProblem(f"the private RabbitMQ node did not start: {exc}") from None

    def _add_user(self, node: RabbitNode, point: Endpoint) -> None:
        node.user, node.password = point.user or "guest", point.password or "guest"
        node.vhost = point.vhost
        try:
            node.ensure_user()
        except BrokerUnavailable as exc:
            raise InfraProblem(f"the private RabbitMQ node refused a user: {exc}") from None
        if (reason := _probe(point)) is not None:
            raise InfraProblem(f"the private RabbitMQ at {redact_url(point.url)}: {reason}")

    def _start_redis(self, point: Endpoint) -> None:
        base = self.root / "redis" / str(point.port)
        server = RedisServer(
            port=point.port,
            base=base,
            password=point.password,
            username=point.user,
            persistent=True,
        )
        self.say(
            f"apis up: nothing answers at {redact_url(point.url)}: starting a private Redis from "
            f"redis-server on 127.0.0.1:{point.port} (data in {_shown(base)}); it stops with "
            "the rest"
        )
        self.redis_servers.append(server)
        try:
            server.start()
        except RedisUnavailable as exc:
            raise InfraProblem(f"the private Redis did not start: {exc}") from None

    def _compose(self, point: Endpoint) -> None:
        service = COMPOSE_SERVICES[point.label]
        self.say(
            f"apis up: nothing answers at {redact_url(point.url)}: starting {point.label} with "
            f"`docker compose up -d {service}`; it stops with the rest"
        )
        self.compose_services.append(service)
        result = subprocess.run(
            [shutil.which("docker") or "docker", "compose", "up", "-d", "--wait", service],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            said = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise InfraProblem(f"`docker compose up -d {service}` failed: {said[-300:]}")

    @property
    def data_dir(self) -> str:
        return _shown(self.root)

    @property
    def started(self) -> bool:
        return bool(self.rabbit_nodes or self.redis_servers or self.compose_services)

    def stop(self) -> None:
        """Stop whatever was started, data kept; never raises."""
        if not self.started:
            return
        self.say(
            f"apis up: stopping the private infrastructure (its data stays in {_shown(self.root)})"
        )
        for server in self.redis_servers:
            with contextlib.suppress(Exception):
                server.stop()
        for node in self.rabbit_nodes:
            with contextlib.suppress(Exception):
                node.stop()
        if self.compose_services:
            with contextlib.suppress(Exception):
                subprocess.run(
                    [shutil.which("docker") or "docker", "compose", "stop", *self.compose_services],
                    cwd=REPO_ROOT, capture_output=True, timeout=120, check=False,
                )  # fmt: skip
        self.rabbit_nodes, self.redis_servers, self.compose_services = [], [], []


def _kept_cookie(path: Path) -> str:
    """The private node's Erlang cookie, kept beside its data (readable by its owner only)."""
    with contextlib.suppress(OSError):
        if cookie := path.read_text().strip():
            return cookie
    cookie = secrets.token_hex(16)
    write_private(path, cookie)
    return cookie


def _management_port(port: int) -> int:
    """RabbitMQ's own pairing (5672 → 15672) when that port is free, else a free one."""
    paired = port + 10000
    if paired <= 65535 and not listening("127.0.0.1", paired, timeout=0.2):
        return paired
    return free_port()


def _shown(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return f"{path.relative_to(REPO_ROOT)}/"
    return str(path)
