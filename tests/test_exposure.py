"""The issue's attacker on the same network, with real processes and a real non-loopback
address of this machine: public defaults answer nobody but this machine, `apis up --host
0.0.0.0` refuses them in one line, and with real settings the services serve the network.

A connection from this machine to its own non-loopback address (eth0's, say) arrives from that
address: to the service it is a client on the network, as another machine would be."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import httpx
import pytest
from e2e_lab import (
    APIS,
    REPO_ROOT,
    Databases,
    delete_broker_objects,
    free_port,
    run_manage,
    wait_until,
)

from apis_lab import lab_run as lab_module
from apis_lab.catalogue import FEED, PRODUTOS

pytestmark = [pytest.mark.e2e, pytest.mark.any_database]

REAL = {
    "SECRET_KEY": "e2e-" + "0123456789abcdefghijklmnopqrstuvwxyz" * 2,
    "PRODUTOS_API_KEY": "e2e-write-key-0123456789abcdef",
}
PUBLIC_DEFAULTS = ("SECRET_KEY", "PRODUTOS_API_KEY", "ALLOWED_HOSTS", "DEBUG", "CQRS_SIGNING_KEY")


def network_address() -> str:
    """An IPv4 address of this machine that is not loopback (never skipped: a machine without
    one cannot run this test, and says so)."""
    output = subprocess.run(
        ["ip", "-o", "-4", "addr", "show", "scope", "global"], capture_output=True, text=True
    ).stdout
    found = re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", output)
    if not found:
        pytest.fail("this test needs a non-loopback IPv4 address on this machine (`ip addr`)")
    return found[0]


def remote_client(address: str, **options) -> httpx.Client:
    """A client whose connections leave from `address`: to the server, a machine elsewhere."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), **options)


def clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any public-default variable or developer env file."""
    env = {k: v for k, v in os.environ.items() if k not in PUBLIC_DEFAULTS}
    for service in ("produtos", "feed"):
        empty = tmp / f".env.{service}.none"
        empty.write_text("")
        env[f"{service.upper()}_ENV_FILE"] = str(empty)
    env.update(extra)
    return env


def test_apis_up_off_loopback_without_secrets_exits_with_one_line_naming_them(tmp_path):
    result = subprocess.run(
        [APIS, "up", "--host", "0.0.0.0"], cwd=REPO_ROOT, env=clean_env(tmp_path),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for name in ("SECRET_KEY", "PRODUTOS_API_KEY", "ALLOWED_HOSTS", "CQRS.md#segurança"):
        assert name in lines[0], lines[0]
    assert "--host 0.0.0.0" in lines[0] and "Traceback" not in result.stdout + result.stderr


def test_apis_up_off_loopback_refuses_an_admin_left_with_admin_admin(tmp_path, rabbitmq_url):
    """`apis up --create-admin` on loopback made admin/admin, and a later `--host 0.0.0.0`
    kept it: now that start is refused, naming the account."""
    database = tmp_path / "produtos.sqlite3"
    env = clean_env(
        tmp_path, **REAL, ALLOWED_HOSTS="api.example.com,127.0.0.1",
        DATABASE_URL=f"sqlite:///{database}", RABBITMQ_URL=rabbitmq_url,
    )  # fmt: skip
    for service in (PRODUTOS, FEED):
        env[f"{service.name.upper()}_ENV_FILE"] = str(tmp_path / f"{service.name}.env")
        (tmp_path / f"{service.name}.env").write_text(
            f"DATABASE_URL=sqlite:///{tmp_path / f'{service.name}.sqlite3'}\n"
        )
    env.pop("DATABASE_URL")
    run_manage(PRODUTOS.directory, env, "migrate", "--noinput")
    make_admin = (
        "from django.contrib.auth import get_user_model; "
        "get_user_model().objects.create_superuser('admin', '', 'admin')"
    )
    run_manage(PRODUTOS.directory, env, "shell", "-c", make_admin)
    result = subprocess.run(
        [APIS, "up", "--host", "0.0.0.0", "--produtos-port", str(free_port()),
         "--feed-port", str(free_port())],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "non-default admin password (accounts admin" in lines[0], lines[0]
    assert "api_produtos" in lines[0]


def test_runserver_0_with_public_defaults_serves_this_machine_only(tmp_path):
    """The seed's `runserver 0:8001` still works with nothing set — for this machine. From the
    network, `Host: localhost` no longer gets in, and no write goes through without a key."""
    address, port = network_address(), free_port()
    env = clean_env(
        tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'produtos.sqlite3'}", PYTHONUNBUFFERED="1"
    )
    run_manage(PRODUTOS.directory, env, "migrate", "--noinput")
    log = open(tmp_path / "runserver.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"0:{port}", "--noreload"],
        cwd=PRODUTOS.directory, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        local = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)
        wait_until(lambda: _answers(local, "/health/live"), 60, what="runserver answering")
        body = {"sku": "LOCAL-1", "nome": "n", "preco": "1.00"}
        assert local.post("/api/produtos/", json=body).status_code == 201  # zero setup, here
        with remote_client(address, base_url=f"http://{address}:{port}", timeout=5) as remote:
            for method, path in (("GET", "/api/produtos/"), ("POST", "/api/produtos/"),
                                 ("GET", "/admin/login/"), ("GET", "/health/live")):  # fmt: skip
                response = remote.request(
                    method, path, headers={"Host": "localhost"}, json=body | {"sku": "REMOTE"}
                )
                assert response.status_code == 403, (method, path, response.text)
                detail = response.json()["detail"]
                assert "SECRET_KEY" in detail and "PRODUTOS_API_KEY" in detail
        assert local.get("/api/produtos/?q=REMOTE").json()["count"] == 0
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _answers(client: httpx.Client, path: str) -> bool:
    try:
        return client.get(path).status_code == 200
    except httpx.HTTPError:
        return False


def test_apis_up_off_loopback_with_real_settings_serves_the_network(tmp_path, rabbitmq_url):
    """With real settings the services answer other machines, writes need the key, and the
    admin made by `--create-admin` has the password of APIS_ADMIN_PASSWORD, never printed."""
    address = network_address()
    databases = Databases(tmp_path)
    hosts = f"{address},127.0.0.1,localhost"
    admin_password = "e2e-admin-password-7f3a"
    lab = lab_module.start_lab(
        tmp_path, rabbitmq_url, databases, "--host", "0.0.0.0", "--create-admin",
        api_key=REAL["PRODUTOS_API_KEY"],
        extra_env={"APIS_ADMIN_USER": "ops", "APIS_ADMIN_PASSWORD": admin_password,
                   "SECRET_KEY": REAL["SECRET_KEY"], "ALLOWED_HOSTS": hosts},
    )  # fmt: skip
    try:
        assert admin_password not in lab.output()
        assert "user ops, password from APIS_ADMIN_PASSWORD" in lab.output()
        port = urllib.parse.urlsplit(lab.produtos_url).port
        feed_port = urllib.parse.urlsplit(lab.feed_url).port
        with remote_client(address, timeout=10) as remote:
            base = f"http://{address}:{port}"
            body = {"sku": "NET-1", "nome": "n", "preco": "1.00"}
            assert remote.post(f"{base}/api/produtos/", json=body).status_code == 401
            created = remote.post(
                f"{base}/api/produtos/", json=body,
                headers={"X-API-Key": REAL["PRODUTOS_API_KEY"]},
            )  # fmt: skip
            assert created.status_code == 201, created.text
            wait_until(
                lambda: remote.get(f"http://{address}:{feed_port}/api/feed/").json()["count"] == 1,
                30, what="the product on the feed, read from the network",
            )  # fmt: skip
            # A Host the deployment did not name is refused.
            bad_host = remote.get(f"{base}/api/produtos/", headers={"Host": "evil.example"})
            assert bad_host.status_code == 400
    finally:
        lab.stop()
        delete_broker_objects(rabbitmq_url, lab.exchange, lab.broker_queues())
        databases.drop_all()


def test_check_deploy_is_clean_for_the_documented_production_configuration(tmp_path):
    """CQRS.md's production block is what `manage.py check --deploy` accepts without a word."""
    text = (REPO_ROOT / "CQRS.md").read_text()
    block = re.search(r"```dotenv\n# produção: check --deploy limpo\n(.*?)```", text, re.S)
    assert block, "CQRS.md lost its production configuration block"
    values = {}
    for line in block.group(1).splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    assert {"SECRET_KEY", "PRODUTOS_API_KEY", "ALLOWED_HOSTS", "HTTPS_ONLY", "DEBUG"} <= set(values)
    # The secrets are left empty in the docs (each deployment generates its own): these stand in.
    values = {name: value for name, value in values.items() if value} | REAL
    env = clean_env(tmp_path, **values, DATABASE_URL=f"sqlite:///{tmp_path / 'x.sqlite3'}")
    for service in (PRODUTOS, FEED):
        result = subprocess.run(
            [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
            cwd=service.directory, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert "no issues (0 silenced)" in result.stdout
    # With the lab's defaults, the same check names what is still public.
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=FEED.directory, env=clean_env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "django_tools.W010" in result.stdout + result.stderr


def test_gunicorn_bound_off_loopback_refuses_public_defaults(tmp_path):
    from apis_lab.catalogue import gunicorn

    command = gunicorn(FEED, "0.0.0.0", free_port(), 1)
    env = clean_env(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'feed.sqlite3'}")
    started = time.monotonic()
    result = subprocess.run(
        command, cwd=FEED.directory, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    refusal = [line for line in result.stderr.splitlines() if line.startswith("gunicorn: ")]
    assert len(refusal) == 1 and "SECRET_KEY" in refusal[0] and "ALLOWED_HOSTS" in refusal[0]
    assert time.monotonic() - started < 30
    # On loopback, nothing to set: it serves.
    loopback = gunicorn(FEED, "127.0.0.1", free_port(), 1)
    server = subprocess.Popen(loopback, cwd=FEED.directory, env=env, stderr=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        for line in server.stderr:
            if "Booting worker" in line:
                break
        else:
            pytest.fail("gunicorn on loopback did not start")
    finally:
        server.terminate()
        server.wait(timeout=30)
