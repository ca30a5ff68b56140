from django_tools.settings import common_settings, database_settings


def test_sqlite_under_var_is_the_default(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    db = database_settings("svc", tmp_path)["default"]
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert db["NAME"] == str(tmp_path / "var" / "svc.sqlite3")
    assert (tmp_path / "var").is_dir()
    assert db["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


def test_postgres_from_database_url_keeps_service_test_databases_apart(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@127.0.0.1:5432/lab")
    db = database_settings("feed", tmp_path)["default"]
    assert (db["ENGINE"], db["NAME"], db["HOST"]) == (
        "django.db.backends.postgresql",
        "lab",
        "127.0.0.1",
    )
    assert db["TEST"]["NAME"] == "test_feed"


def test_defaults_are_safe_for_local_use(tmp_path, monkeypatch):
    for name in ("DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "RABBITMQ_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = common_settings(service="svc", base_dir=tmp_path, repo_root=tmp_path)
    assert settings["DEBUG"] is False
    assert "localhost" in settings["ALLOWED_HOSTS"]
    assert settings["RABBITMQ_URL"] == "amqp://admin:admin@localhost:5672/"
    assert settings["REDIS_URL"] == "redis://localhost:6379/0"


def test_environment_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("DEBUG", "true")
    monkeypatch.setenv("ALLOWED_HOSTS", "api.local")
    monkeypatch.setenv("RABBITMQ_URL", "amqp://u:p@broker:5672/")
    settings = common_settings(service="svc", base_dir=tmp_path, repo_root=tmp_path)
    assert settings["DEBUG"] is True
    assert settings["ALLOWED_HOSTS"] == ["api.local"]
    assert settings["RABBITMQ_URL"] == "amqp://u:p@broker:5672/"
