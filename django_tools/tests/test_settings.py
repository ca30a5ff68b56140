"""The shared settings modules read the environment when imported: each test reloads them
under the environment it sets."""

import importlib

import pytest

from django_tools.env import ImproperlyConfiguredEnv


def load(module: str):
    return importlib.reload(importlib.import_module(f"django_tools.chassis.settings.{module}"))


@pytest.fixture(autouse=True)
def restore_modules(monkeypatch):
    yield
    monkeypatch.undo()  # the environment first, then the modules as it makes them
    for module in ("base", "cqrs", "celery", "logging"):
        load(module)


def test_sqlite_under_var_is_the_default(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    db = load("base").database_settings("svc", tmp_path)["default"]
    assert db["ENGINE"] == "django_tools.db.sqlite"  # Django's, with a write gate
    assert db["NAME"] == str(tmp_path / "var" / "svc.sqlite3")
    assert (tmp_path / "var").is_dir()
    assert db["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


def test_postgres_from_database_url_keeps_service_test_databases_apart(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@127.0.0.1:5432/lab")
    monkeypatch.setenv("DB_STATEMENT_TIMEOUT", "1234")
    db = load("base").database_settings("replica_svc", tmp_path)["default"]
    assert (db["ENGINE"], db["NAME"], db["HOST"]) == (
        "django.db.backends.postgresql",
        "lab",
        "127.0.0.1",
    )
    assert db["TEST"]["NAME"] == "test_replica_svc"
    assert db["OPTIONS"]["options"] == "-c statement_timeout=1234"


def test_defaults_are_safe_for_local_use(monkeypatch):
    for name in ("DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "RABBITMQ_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    base = load("base")
    assert base.DEBUG is False
    assert "localhost" in base.ALLOWED_HOSTS
    assert base.RABBITMQ_URL == "amqp://admin:admin@localhost:5672/"
    assert base.REDIS_URL == "redis://localhost:6379/0"
    assert base.REPLICATION_MODE == "cqrs"
    assert load("cqrs").CQRS_EXCHANGE == "cqrs"


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("DEBUG", "true")
    monkeypatch.setenv("ALLOWED_HOSTS", "api.local")
    monkeypatch.setenv("RABBITMQ_URL", "amqp://u:p@broker:5672/")
    monkeypatch.setenv("REPLICATION_MODE", "Celery")
    monkeypatch.setenv("CQRS_MAX_RETRIES", "3")
    base = load("base")
    assert base.DEBUG is True
    assert base.ALLOWED_HOSTS == ["api.local"]
    assert base.RABBITMQ_URL == "amqp://u:p@broker:5672/"
    assert base.REPLICATION_MODE == "celery"
    assert load("celery").CELERY_BROKER_URL == "amqp://u:p@broker:5672/"
    assert load("cqrs").CQRS_REPLICA_OPTIONS["CQRS_MAX_RETRIES"] == 3


def test_a_value_that_cannot_be_used_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("REPLICATION_MODE", "kafka")
    with pytest.raises(ImproperlyConfiguredEnv, match="REPLICATION_MODE='kafka': use cqrs"):
        load("base")
    monkeypatch.delenv("REPLICATION_MODE")
    monkeypatch.setenv("CQRS_PREFETCH", "lots")
    with pytest.raises(ImproperlyConfiguredEnv, match="CQRS_PREFETCH='lots' is not an integer"):
        load("cqrs")
