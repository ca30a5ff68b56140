"""`apis up` as a user meets it: refusing to start without its infrastructure, and leaving
nothing behind when stopped."""

import os
import signal
import subprocess
from pathlib import Path

import pytest
from e2e_lab import (
    APIS,
    REPO_ROOT,
    Databases,
    delete_broker_objects,
    start_lab,
    wait_until,
)

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


def run_up(**env_overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_overrides}
    return subprocess.run(
        [APIS, "up"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize(
    "variable,url,label",
    [
        ("RABBITMQ_URL", "amqp://admin:admin@127.0.0.1:1/", "RabbitMQ"),
        ("REDIS_URL", "redis://127.0.0.1:1/0", "Redis"),
    ],
)
def test_exits_at_once_with_one_clear_line_when_infrastructure_is_missing(variable, url, label):
    result = run_up(**{variable: url})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert label in lines[0] and "127.0.0.1:1" in lines[0]
    assert "docker compose up -d" in lines[0]
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
