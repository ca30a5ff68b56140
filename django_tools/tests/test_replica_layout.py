"""The replica's modules import in one direction: the core (apply and the steps it orchestrates)
never imports the `cqrs` manager that calls into it, and no two modules import each other, not
even from inside a function."""

import ast
from pathlib import Path

import pytest

import django_tools.replica

# No database in it (the imports of the replica's modules): CI runs it on SQLite only.
pytestmark = pytest.mark.any_database

PACKAGE = Path(django_tools.replica.__file__).parent
CORE = ("apply", "values", "hooks", "decision", "write")


def imports(path: Path) -> set[str]:
    """The django_tools.replica modules `path` imports, anywhere in the file."""
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "django_tools.replica"
        ):
            parts = node.module.split(".")[2:]
            if parts:
                found.add(parts[0])
            else:  # from django_tools.replica import hooks
                found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.Import):
            found |= {
                alias.name.split(".")[2]
                for alias in node.names
                if alias.name.startswith("django_tools.replica.")
            }
    return found - {path.stem}


def graph() -> dict[str, set[str]]:
    return {path.stem: imports(path) for path in PACKAGE.glob("*.py")}


def test_the_core_never_imports_the_manager():
    edges = graph()
    assert [module for module in CORE if "managers" in edges[module]] == []
    assert "apply" in edges["managers"]


def test_no_import_cycle_among_the_replica_modules():
    edges = graph()
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        for imported in edges.get(module, ()):
            if imported in path:
                cycles.append([*path[path.index(imported) :], imported])
            else:
                visit(imported, [*path, imported])

    for module in edges:
        visit(module, [module])
    assert cycles == []
