"""`apis up` as a user meets it: refusing to start without its infrastructure, and leaving
nothing behind when stopped."""

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
from e2e_lab import (
    API_KEY,
    APIS,
    REPO_ROOT,
    Databases,
    delete_broker_objects,
    free_port,
    start_lab,
    wait_until,
)

from django_tools.heartbeat import pid_alive

pytestmark = [pytest.mark.e2e, pytest.mark.any_database]


def live_processes_in_groups(groups: list[int]) -> list[int]:
    """Processes (not zombies) whose process group is one of `groups`."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, pgid = fields[0], int(fields[2])
        if pgid in groups and state != "Z":
            live.append(int(stat.parent.name))
    return live


def run_up(*args: str, **env_overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_overrides}
    return subprocess.run(
        [APIS, "up", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize(
    "variable,url,label",
    [
        ("RABBITMQ_URL", "amqp://admin:admin@127.0.0.1:1/", "RabbitMQ"),
        ("REDIS_URL", "redis://127.0.0.1:1/0", "Redis"),
    ],
)
def test_no_infra_exits_at_once_with_one_clear_line_when_infrastructure_is_missing(
    variable, url, label
):
    result = run_up("--no-infra", **{variable: url})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert label in lines[0] and "127.0.0.1:1" in lines[0]
    # Both ways: compose, or the installed binaries `apis up` starts itself.
    assert "docker compose up -d" in lines[0] and "apt-get install" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr


SECRET = "Sup3rS3cret"


@pytest.mark.parametrize(
    "variable,url",
    [
        ("RABBITMQ_URL", f"amqp://admin:ab/{SECRET}@127.0.0.1:1/"),
        ("RABBITMQ_URL", f"amqp://admin:{SECRET}?x@127.0.0.1:1/"),
        ("RABBITMQ_URL", f"amqp://admin:a#{SECRET}@127.0.0.1:1/"),
        ("REDIS_URL", f"redis://:{SECRET}/x@127.0.0.1:1/0"),
        ("REDIS_URL", f"redis://:p@{SECRET}@127.0.0.1:1/0"),
    ],
)
def test_a_password_a_parser_cannot_read_never_shows_in_its_line(variable, url):
    """An unencoded `/`, `?`, `#` or `@` in a password: the parsers quote a piece of it in
    their error, which `apis up` printed."""
    result = run_up(**{variable: url})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    output = result.stdout + result.stderr
    assert SECRET not in output and "'ab'" not in output and "'a'" not in output, output
    assert "Traceback" not in output


def pid_in(path: Path) -> int:
    return int(path.read_text().strip())


def test_up_starts_a_private_broker_and_redis_where_nothing_answers_and_ctrl_c_stops_them(
    tmp_path,
):
    """No Docker, the machine's RabbitMQ and Redis left alone: URLs on unused loopback ports,
    and `apis up` brings its own (management plugin, the URL's user), replicates a write,
    and Ctrl-C stops everything, the private servers included."""
    rabbit_port, redis_port = free_port(), free_port()
    infra_dir = tmp_path / "infra"
    databases = Databases(tmp_path)
    lab = start_lab(
        tmp_path,
        f"amqp://lab:lab-pass@127.0.0.1:{rabbit_port}/",
        databases,
        "--web-workers", "1",
        REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        APIS_INFRA_DIR=str(infra_dir),
    )  # fmt: skip
    pids: list[int] = []
    try:
        said = lab.output()
        assert f"private RabbitMQ node from rabbitmq-server on 127.0.0.1:{rabbit_port}" in said
        assert f"private Redis from redis-server on 127.0.0.1:{redis_port}" in said
        assert "lab-pass" not in said
        pids = [
            pid_in(infra_dir / "rabbitmq" / str(rabbit_port) / "pid"),
            pid_in(infra_dir / "redis" / str(redis_port) / "redis.pid"),
        ]
        assert all(pid_alive(pid) for pid in pids)
        with httpx.Client(timeout=10) as client:
            created = client.post(
                f"{lab.produtos_url}/api/produtos/",
                json={"sku": "PRIVATE-1", "nome": "Infra própria", "preco": "9.90"},
                headers={"X-API-Key": API_KEY},
            )
            assert created.status_code == 201, created.text
            item = f"{lab.feed_url}/api/feed/{created.json()['id']}"
            wait_until(lambda: client.get(item).status_code == 200, 20, what="the replica")
        children = lab.child_pids()
        lab.process.send_signal(signal.SIGINT)  # Ctrl-C
        lab.process.wait(timeout=60)
        wait_until(lambda: not live_processes_in_groups(children), 10, what="children to exit")
        # `apis up` has exited: what it started must be gone already (no waiting here).
        assert not [pid for pid in pids if pid_alive(pid)], "a private server outlived apis up"
        assert "stopping the private infrastructure" in lab.output()
    finally:
        lab.stop()
        for pid in pids:  # only if the test failed half-way
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        databases.drop_all()


def test_sigterm_stops_every_child(tmp_path, rabbitmq_url, redis_url):
    databases = Databases(tmp_path)
    lab = start_lab(tmp_path, rabbitmq_url, databases)
    try:
        children = lab.child_pids()
        assert len(children) == 8  # 2 servers, relay, consumer, 2 Celery workers and beats
        lab.process.send_signal(signal.SIGTERM)
        assert lab.process.wait(timeout=30) != 0  # stopped by a signal, as honcho reports
        # Orphaned children may stay zombies for a moment until init reaps them; they count
        # as stopped.
        wait_until(lambda: not live_processes_in_groups(children), 10, what="children to exit")
    finally:
        lab.stop()
        delete_broker_objects(rabbitmq_url, lab.exchange, lab.broker_queues())
        databases.drop_all()


def test_the_apis_bind_loopback_unless_told_otherwise():
    """`apis up` bound 0.0.0.0: anyone on the network reached the lab's open write API."""
    from apis.cli import build_parser
    from apis_lab.catalogue import EcosystemOptions

    assert build_parser().parse_args(["up"]).host == "127.0.0.1"
    assert build_parser().parse_args(["up", "--host", "0.0.0.0"]).host == "0.0.0.0"
    assert EcosystemOptions().host == "127.0.0.1"


def test_the_banner_names_the_rabbitmq_ui_of_rabbitmq_url_with_its_user_only():
    """The banner said `http://localhost:15672 (admin/admin)` whatever RABBITMQ_URL was."""
    from apis.up import rabbitmq_ui

    assert (
        rabbitmq_ui("amqp://admin:admin@localhost:5672/") == "http://localhost:15672 (user admin)"
    )
    several = "amqp://ops:p%40ss@mq-1.internal:5672/vh,amqp://ops:x@mq-2/"
    assert rabbitmq_ui(several) == "http://mq-1.internal:15672 (user ops)"
    assert rabbitmq_ui("amqp://ops:a@b/c@[::1]:5672/") == "http://[::1]:15672 (user ops)"
    assert rabbitmq_ui("amqp://mq") == "http://mq:15672 (user guest)"


def test_create_admin_takes_the_env_pair_and_admin_admin_only_on_loopback(monkeypatch):
    from apis.cli import build_parser
    from apis.up import Abort, AdminAccount

    assert build_parser().parse_args(["up", "--create-admin"]).create_admin
    assert not build_parser().parse_args(["up"]).create_admin
    monkeypatch.delenv("APIS_ADMIN_USER", raising=False)
    monkeypatch.delenv("APIS_ADMIN_PASSWORD", raising=False)
    local = AdminAccount.from_env("127.0.0.1")
    assert (local.user, local.password, local.default) == ("admin", "admin", True)
    # The banner names who logs in, never the password (not even the default one).
    assert "admin/admin" not in local.banner() and "default password" in local.banner()
    with pytest.raises(Abort, match="APIS_ADMIN_PASSWORD"):
        AdminAccount.from_env("0.0.0.0")
    monkeypatch.setenv("APIS_ADMIN_PASSWORD", "admin")  # a default is no password off loopback
    with pytest.raises(Abort, match="APIS_ADMIN_PASSWORD"):
        AdminAccount.from_env("0.0.0.0")
    # On loopback a default given explicitly is taken as it is, and called a default.
    monkeypatch.setenv("APIS_ADMIN_PASSWORD", "password")
    given = AdminAccount.from_env("127.0.0.1")
    assert (given.password, given.default) == ("password", True)
    assert "password" not in given.banner().replace("default password", "")
    monkeypatch.setenv("APIS_ADMIN_USER", "ops")
    monkeypatch.setenv("APIS_ADMIN_PASSWORD", "s3cret")
    chosen = AdminAccount.from_env("0.0.0.0")
    assert (chosen.user, chosen.password, chosen.default) == ("ops", "s3cret", False)
    assert "s3cret" not in chosen.banner() and "ops" in chosen.banner()
