"""Public defaults reach this machine only (django_tools.exposure): the rules, the middleware
that answers loopback clients only while a default is in effect, the authentication that never
takes a default password from elsewhere, and this machine's own SECRET_KEY."""

import json
import os
import stat
import threading

import pytest
from django.contrib.auth import get_user_model
from django.http import HttpResponse
from django.test import RequestFactory

from django_tools import exposure
from django_tools.chassis.settings.base import local_secret_key
from django_tools.exposure.backends import DefaultPasswordBackend
from django_tools.exposure.middleware import LoopbackOnlyMiddleware

REAL = {
    "SECRET_KEY": "k" * 20 + "0123456789abcdefghijklmnopqrstuvwxyz",
    "PRODUTOS_API_KEY": "a-real-write-key-0123456789",
    "ALLOWED_HOSTS": "api.example.com,localhost",
    "DEBUG": "false",
}


@pytest.mark.parametrize(
    "address,loopback",
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True),
     ("::ffff:127.0.0.1", True), ("localhost", True), ("192.0.2.7", False), ("0.0.0.0", False),
     ("::", False), ("10.0.0.1", False), ("::ffff:10.0.0.1", False), ("", False), (None, False),
     ("example.com", False)],
)  # fmt: skip
def test_loopback_addresses(address, loopback):
    assert exposure.is_loopback_address(address) is loopback
    if address is not None:
        assert exposure.is_loopback_bind((address, 8000)) is loopback
    assert exposure.is_loopback_bind("/run/gunicorn.sock")


def test_nothing_set_names_every_public_default():
    assert exposure.env_problems({}, "produtos") == [
        "SECRET_KEY", "PRODUTOS_API_KEY", "ALLOWED_HOSTS",
    ]  # fmt: skip
    assert exposure.env_problems({}, "feed") == ["SECRET_KEY", "ALLOWED_HOSTS"]
    assert exposure.env_problems(REAL, "produtos") == []
    assert exposure.env_problems(REAL, "feed") == []


@pytest.mark.parametrize(
    "override,problem",
    [
        ({"SECRET_KEY": "short"}, "SECRET_KEY (50+ random characters)"),
        ({"SECRET_KEY": "django-insecure-" + "x1y2z3" * 10}, "SECRET_KEY (50+ random characters)"),
        ({"SECRET_KEY": "django-insecure-apis-ecosystem-local-only-set-SECRET_KEY-in-production"},
         "SECRET_KEY"),
        ({"PRODUTOS_API_KEY": "change-me"}, "PRODUTOS_API_KEY"),
        ({"PRODUTOS_API_KEY": "ecosystem-local-key"}, "PRODUTOS_API_KEY"),
        ({"PRODUTOS_API_KEY": "abc123"}, "PRODUTOS_API_KEY (16+ random characters)"),
        ({"ALLOWED_HOSTS": "localhost,127.0.0.1,[::1],0.0.0.0"},
         "ALLOWED_HOSTS (real host names, no * or 0.0.0.0)"),
        ({"ALLOWED_HOSTS": "*"}, "ALLOWED_HOSTS (real host names, no * or 0.0.0.0)"),
        ({"ALLOWED_HOSTS": "localhost,127.0.0.1"},
         "ALLOWED_HOSTS (the names clients use to reach this host)"),
        ({"DEBUG": "true"}, "DEBUG=false"),
    ],
)  # fmt: skip
def test_a_published_or_weak_value_is_no_secret(override, problem):
    assert exposure.env_problems({**REAL, **override}, "produtos") == [problem]


def _request(address: str, **headers: str):
    return RequestFactory().get("/api/produtos/", REMOTE_ADDR=address, **headers)


def test_with_public_defaults_only_loopback_clients_are_answered(monkeypatch, settings):
    """From another address, `Host: localhost` logged in as admin/admin and wrote without a
    key: ALLOWED_HOSTS had localhost and 0.0.0.0, the key was unset."""
    settings.SERVICE_NAME = "produtos"
    for name in REAL:
        monkeypatch.delenv(name, raising=False)
    middleware = LoopbackOnlyMiddleware(lambda request: HttpResponse("served"))
    for local in ("127.0.0.1", "127.0.0.2", "::1"):
        assert middleware(_request(local)).content == b"served"
    refused = middleware(_request("192.0.2.7", HTTP_HOST="localhost"))
    assert refused.status_code == 403
    detail = json.loads(refused.content)["detail"]
    assert "SECRET_KEY" in detail and "PRODUTOS_API_KEY" in detail and "ALLOWED_HOSTS" in detail
    assert "CQRS.md#segurança" in detail
    # A reverse proxy on this machine connects from loopback: what it forwards is not local.
    proxied = middleware(_request("127.0.0.1", HTTP_X_FORWARDED_FOR="192.0.2.7"))
    assert proxied.status_code == 403


def test_with_real_settings_the_middleware_steps_aside(monkeypatch, settings):
    from django.core.exceptions import MiddlewareNotUsed

    settings.SERVICE_NAME = "produtos"
    for name, value in REAL.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(MiddlewareNotUsed):
        LoopbackOnlyMiddleware(lambda request: HttpResponse("served"))


@pytest.mark.django_db
def test_a_default_password_logs_in_from_loopback_only():
    get_user_model().objects.create_superuser("admin", "", "admin")
    get_user_model().objects.create_superuser("ops", "", "a-long-real-password")
    backend = DefaultPasswordBackend()
    assert backend.authenticate(_request("127.0.0.1"), username="admin", password="admin")
    assert backend.authenticate(_request("192.0.2.7"), username="admin", password="admin") is None
    assert backend.authenticate(
        _request("192.0.2.7"), username="ops", password="a-long-real-password"
    )
    assert exposure.admins_with_default_passwords() == ["admin"]
    assert "accounts admin" in exposure.admin_problem(["admin"])


def test_the_local_secret_key_is_random_per_machine_private_and_stable(tmp_path):
    folder = tmp_path / "var"
    keys: list[str] = []
    threads = [threading.Thread(target=lambda: keys.append(local_secret_key(folder)))
               for _ in range(8)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(keys)) == 1, "processes starting together must agree on one key"
    key = keys[0]
    assert len(key) >= 50 and exposure.secret_key_problem(key) is None
    assert stat.S_IMODE(os.stat(folder / "secret_key").st_mode) == 0o600
    assert local_secret_key(folder) == key
    assert local_secret_key(tmp_path / "elsewhere") != key


def test_no_constant_key_and_no_wildcard_host_by_default():
    from pathlib import Path

    from django_tools.chassis.settings import base

    assert "0.0.0.0" not in base.ALLOWED_HOSTS
    assert "django-insecure-" not in Path(base.__file__).read_text()
