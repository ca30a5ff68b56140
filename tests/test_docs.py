"""The docs say what the code does: every environment variable the code reads is in the
configuration table of CQRS.md, and every variable of that table is read by the code."""

import re

import pytest
from e2e_lab import REPO_ROOT

pytestmark = pytest.mark.any_database

#: Set by one of our processes for another, never by a user.
INTERNAL = {
    "CQRS_CONSUME_PARENT_PID",  # cqrs_consume → its workers
    "APIS_WORKSPACE_CHILD",  # the root pytest → the suites it runs
    "PYTEST_ADDOPTS",
    "DJANGO_SETTINGS_MODULE",
    "PYTHONUNBUFFERED",
    "HOME",
    "APIS_LAB_CRASH_MARKER",  # the fault suite → its consumer's crash-loop hook
    "PYTHONPATH",  # the fault suite puts that hook first on its consumer's path
    "APIS_LAB_STOCK_MASTER",  # the fault suite → its stock master's publish-on-commit hook
    "APIS_LAB_REPLICATION_OFF",  # the bench → the master of its replication-off REST burst
}
READS = re.compile(
    r"""(?:env_(?:str|int|float|bool|list)\(\s*|environ(?:\.get)?[(\[]\s*|env\(\)\.get\(\s*)
        ["']([A-Z][A-Z0-9_]+)["']""",
    re.VERBOSE,
)
CODE = ["django_tools/django_tools", "api_produtos", "api_feed", "apis", "apis_lab"]


def variables_read() -> dict[str, str]:
    found = {}
    for folder in CODE:
        for path in (REPO_ROOT / folder).rglob("*.py"):
            if "tests" in path.relative_to(REPO_ROOT).parts:
                continue
            for name in READS.findall(path.read_text()):
                found.setdefault(name, str(path.relative_to(REPO_ROOT)))
    return {name: where for name, where in found.items() if name not in INTERNAL}


def configuration_table() -> set[str]:
    text = (REPO_ROOT / "CQRS.md").read_text()
    section = text.split("\n## Configuração\n", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return names


def test_every_variable_the_code_reads_is_documented_and_nothing_else():
    read, documented = variables_read(), configuration_table()
    assert {"RABBITMQ_URL", "CQRS_RETRY_BASE", "DB_CONN_MAX_AGE", "CQRS_TRANSPORT"} <= set(read)
    missing = {name: where for name, where in read.items() if name not in documented}
    assert not missing, f"read by the code, not in CQRS.md's configuration table: {missing}"
    stale = documented - set(read) - {"PRODUTOS_ENV_FILE", "FEED_ENV_FILE"}
    assert not stale, f"in CQRS.md's configuration table, read by no code: {sorted(stale)}"
