"""A bad setting, from every entry point: one line naming the variable, its value and what is
accepted, and exit status 2 — never a traceback through the settings modules."""

import os
import subprocess
import sys

import pytest
from e2e_lab import APIS, FEED_DIR, PRODUTOS_DIR, REPO_ROOT

pytestmark = pytest.mark.any_database

PYTHON = sys.executable
GUNICORN_CONF = "python:django_tools.chassis.gunicorn_conf"
GUNICORN = [PYTHON, "-m", "gunicorn", "api_produtos.wsgi:application", "--preload",
            "--config", GUNICORN_CONF, "--bind", "127.0.0.1:0"]  # fmt: skip
ENTRY_POINTS = {
    "apis up": (REPO_ROOT, [APIS, "up", "--no-infra"]),
    "api_produtos manage.py": (PRODUTOS_DIR, [PYTHON, "manage.py", "check"]),
    "api_feed manage.py": (FEED_DIR, [PYTHON, "manage.py", "migrate", "--plan"]),
    "gunicorn": (PRODUTOS_DIR, GUNICORN),
    "celery worker": (PRODUTOS_DIR, [PYTHON, "-m", "celery", "-A", "api_produtos", "worker"]),
    "celery beat": (FEED_DIR, [PYTHON, "-m", "celery", "-A", "api_feed", "beat"]),
}


def run(entry_point: str, tmp_path, **variables: str) -> subprocess.CompletedProcess:
    directory, command = ENTRY_POINTS[entry_point]
    empty = tmp_path / ".env.empty"
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DEBUG")}
    env.update(PRODUTOS_ENV_FILE=str(empty), FEED_ENV_FILE=str(empty), **variables)
    return subprocess.run(
        command, cwd=directory, env=env, capture_output=True, text=True, timeout=60
    )


def one_line(result: subprocess.CompletedProcess) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, output
    return lines[0]


@pytest.mark.parametrize("entry_point", list(ENTRY_POINTS))
def test_a_bad_boolean_is_one_line_from_every_entry_point(entry_point, tmp_path):
    line = one_line(run(entry_point, tmp_path, DEBUG="talvez"))
    assert "DEBUG='talvez' is not a boolean (use true/false, 1/0)" in line


@pytest.mark.parametrize("entry_point", ["apis up", "api_feed manage.py", "gunicorn"])
@pytest.mark.parametrize(
    "url,said",
    [
        ("postgres://apis:Sup3rS3cret@db:porta/feed", "port or password cannot be read"),
        ("mongodb://db/feed", "the scheme 'mongodb' is not supported"),
    ],
)
def test_a_database_url_that_cannot_be_read_is_one_line_without_its_password(
    entry_point, url, said, tmp_path
):
    line = one_line(run(entry_point, tmp_path, DATABASE_URL=url))
    assert "DATABASE_URL=" in line and said in line and "sqlite:///" in line
    assert "Sup3rS3cret" not in line


def test_a_bad_number_says_what_a_good_one_looks_like(tmp_path):
    line = one_line(run("api_produtos manage.py", tmp_path, CQRS_PREFETCH="muitos"))
    assert "CQRS_PREFETCH='muitos' is not an integer (use a whole number, e.g. 500)" in line
