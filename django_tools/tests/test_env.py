import pytest

from django_tools import env

# No database in it (reading the environment): CI runs it on SQLite only.
pytestmark = pytest.mark.any_database


@pytest.fixture
def env_file(tmp_path, monkeypatch):
    path = tmp_path / ".env.svc"
    path.write_text("FROM_FILE=file\nBOTH=file\n")
    monkeypatch.delenv("FROM_FILE", raising=False)
    monkeypatch.setenv("BOTH", "real")
    return path


def test_env_file_is_under_the_repo_unless_overridden(tmp_path, monkeypatch):
    monkeypatch.delenv("SVC_ENV_FILE", raising=False)
    assert env.env_file_path("svc", tmp_path) == tmp_path / ".env.svc"
    monkeypatch.setenv("SVC_ENV_FILE", "/elsewhere/file")
    assert str(env.env_file_path("svc", tmp_path)) == "/elsewhere/file"


def test_real_variables_win_over_the_file(env_file, tmp_path, monkeypatch):
    monkeypatch.delenv("SVC_ENV_FILE", raising=False)
    values = env.read_service_env("svc", tmp_path)
    assert (values["FROM_FILE"], values["BOTH"]) == ("file", "real")
    import os

    assert "FROM_FILE" not in os.environ  # read_service_env leaves the process alone
    env.load_service_env("svc", tmp_path)
    assert (os.environ["FROM_FILE"], os.environ["BOTH"]) == ("file", "real")
    monkeypatch.delenv("FROM_FILE")


def test_a_missing_file_is_fine(tmp_path, monkeypatch):
    monkeypatch.delenv("SVC_ENV_FILE", raising=False)
    assert env.load_service_env("svc", tmp_path) == tmp_path / ".env.svc"


@pytest.mark.parametrize("raw,expected", [("1", True), ("True", True), ("off", False), ("", False)])
def test_env_bool(monkeypatch, raw, expected):
    monkeypatch.setenv("FLAG", raw)
    assert env.env_bool("FLAG") is expected


def test_bad_values_say_which_variable(monkeypatch):
    monkeypatch.setenv("FLAG", "perhaps")
    with pytest.raises(env.ImproperlyConfiguredEnv, match="FLAG"):
        env.env_bool("FLAG")
    monkeypatch.setenv("N", "ten")
    with pytest.raises(env.ImproperlyConfiguredEnv, match="N="):
        env.env_int("N", 1)


def test_env_list(monkeypatch):
    monkeypatch.setenv("HOSTS", "a, b,,c")
    assert env.env_list("HOSTS", []) == ["a", "b", "c"]


def test_redact_url_hides_only_the_password():
    assert env.redact_url("amqp://admin:s3cret@host:5672/") == "amqp://admin:***@host:5672/"
    assert env.redact_url("redis://localhost:6379/0") == "redis://localhost:6379/0"


@pytest.mark.parametrize(
    "url,shown",
    [
        ("amqp://admin:pa/ss@host:5672/", "amqp://admin:***@host:5672/"),
        ("amqp://admin:p#ss@host:5672/vh", "amqp://admin:***@host:5672/vh"),
        ("amqp://admin:p?ss@host/", "amqp://admin:***@host/"),
        ("amqp://admin:p@ss@host/", "amqp://admin:***@host/"),
        ("redis://:only-a-password@host:6379/0", "redis://:***@host:6379/0"),
        ("amqp://user@host/", "amqp://user@host/"),
        ("amqp://a:x@n1:5672/,amqp://a:y@n2:5673/", "amqp://a:***@n1:5672/,amqp://a:***@n2:5673/"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url_never_shows_a_password_it_cannot_parse(url, shown):
    """urlsplit sees another netloc when a password holds `/`, `#` or `?`; the URL came back
    unchanged, and the password showed on the public /health."""
    assert env.redact_url(url) == shown
