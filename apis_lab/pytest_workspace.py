"""`uv run pytest` at the root runs every suite of the workspace, each in its own pytest process.

A Django process is configured with one settings module, and api_produtos and api_feed each need
their own; so do django_tools' own tests. The root `pytest` therefore runs, one after the other:

    django_tools/  api_produtos/  api_feed/   each `python -m pytest` in its folder
    tests/                                     the end-to-end tests, no Django settings

with the terminal handed over (so `-s`, `--pdb` and the live output work) and every option you
gave forwarded as it is (`-x`, `-k`, `-m`, `-v`/`-vv`, `--lf`, `-p`, …). Paths select suites:
`uv run pytest api_feed/tests/test_apply.py::test_x` runs just that test in api_feed's folder,
`uv run pytest tests/test_chaos.py` just that end-to-end file. With `-x` the first failing suite
ends the run. The exit code is the first failing suite's (5, "no tests", only if none ran any).

`--members-in-parallel` (what CI uses) runs the three member suites at the same time, each one's
output held in a file and printed whole when it ends, then tests/ alone: the members' tests are
unit and integration tests on names of their own (test databases per service and process, broker
objects and Redis keys with random names), and the end-to-end tests, which measure stalls and
deadlines against real processes, keep the machine to themselves. Not with `-s`/`--pdb`: a
member's terminal is a file then.

In a member folder, plain `uv run pytest` runs that member's suite directly.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Workspace members whose suites run in a process of their own, in this order.
MEMBERS = ("django_tools", "api_produtos", "api_feed")
END_TO_END = "tests"
#: Set in the end-to-end suite's process, where this plugin stands aside.
CHILD_ENV = "APIS_WORKSPACE_CHILD"
NO_TESTS = pytest.ExitCode.NO_TESTS_COLLECTED
#: The root's own option: not forwarded (a member's pytest would not know it).
PARALLEL = "--members-in-parallel"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        PARALLEL, action="store_true",
        help="run the workspace members' suites at the same time (then tests/ alone)",
    )  # fmt: skip


def _is_root_session(config: pytest.Config) -> bool:
    return config.rootpath == REPO_ROOT and not os.environ.get(CHILD_ENV)


def _suite_of(arg: str, invocation_dir: Path) -> tuple[str, str | None]:
    """(suite, its argument relative to the suite's folder, or None for the whole suite)."""
    path_part, sep, rest = arg.partition("::")
    path = (invocation_dir / path_part).resolve()
    for suite in (*MEMBERS, END_TO_END):
        folder = REPO_ROOT / suite
        if path == folder:
            return suite, None if not sep else f".{sep}{rest}"
        if folder in path.parents:
            relative = path.relative_to(folder if suite != END_TO_END else REPO_ROOT)
            return suite, f"{relative.as_posix()}{sep}{rest}"
    if path == REPO_ROOT:
        return "*", None
    raise pytest.UsageError(f"{arg} is in no suite of the workspace ({', '.join(MEMBERS)}, tests)")


def _plan(config: pytest.Config) -> tuple[dict[str, list[str]], list[str]]:
    """Which suites run with which path arguments, and the options forwarded to all."""
    given = list(config.invocation_params.args)
    from_args = config.args_source == pytest.Config.ArgsSource.ARGS
    paths = [arg for arg in config.args] if from_args else []
    options = [arg for arg in given if arg not in paths and arg != PARALLEL]
    plan: dict[str, list[str]] = {}
    for arg in paths or ["."]:
        suite, relative = _suite_of(arg, config.invocation_params.dir)
        suites = (*MEMBERS, END_TO_END) if suite == "*" else (suite,)
        for name in suites:
            plan.setdefault(name, [])
            if relative is not None:
                plan[name].append(relative)
    # The end-to-end suite runs from the root, where "." would collect the members again.
    if END_TO_END in plan and not plan[END_TO_END]:
        plan[END_TO_END] = [END_TO_END]
    return {name: plan[name] for name in (*MEMBERS, END_TO_END) if name in plan}, options


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """A member's conftest needs its own Django settings: the root process, which only hands
    the paths on, must not import it (pytest would, for every path given)."""
    if _is_root_session(early_config):
        early_config.known_args_namespace.file_or_dir = []


def _command(suite: str, options: list[str], paths: list[str]) -> tuple[list[str], Path, dict]:
    cwd = REPO_ROOT if suite == END_TO_END else REPO_ROOT / suite
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env[CHILD_ENV] = "1"
    return [sys.executable, "-m", "pytest", *options, *paths], cwd, env


def _banner(suite: str, options: list[str], paths: list[str]) -> str:
    where = suite if suite != END_TO_END else "."
    return f"\n===== {suite}: (cd {where} && pytest {shlex.join([*options, *paths])}) ====="


def _run_together(
    suites: dict[str, list[str]], options: list[str], stop_at_first: bool
) -> list[tuple[str, int, float]]:
    """The suites at once, each one's output in a file, printed whole as each ends."""
    started = time.monotonic()
    results: list[tuple[str, int, float]] = []
    with contextlib.ExitStack() as files:
        running: dict[str, tuple[subprocess.Popen, IO[str]]] = {}
        for suite, paths in suites.items():
            command, cwd, env = _command(suite, options, paths)
            log = files.enter_context(
                tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")
            )
            log.write(_banner(suite, options, paths) + "\n")
            log.flush()
            process = subprocess.Popen(
                command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
            running[suite] = (process, log)
        print(f"\n===== {', '.join(running)}: at the same time =====", flush=True)
        try:
            while running:
                for suite, (process, log) in list(running.items()):
                    code = process.poll()
                    if code is None:
                        continue
                    del running[suite]
                    results.append((suite, code, time.monotonic() - started))
                    log.seek(0)
                    sys.stdout.write(log.read())
                    sys.stdout.flush()
                    if code not in (0, NO_TESTS) and stop_at_first:
                        return results
                time.sleep(0.2)
        finally:
            # -x after a failure, or Ctrl-C: the others stop too.
            for process, _ in running.values():
                process.terminate()
            for suite, (process, _) in running.items():
                process.wait()
                results.append((suite, process.returncode, time.monotonic() - started))
    return results


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    if not _is_root_session(config):
        return None
    plan, options = _plan(config)
    stop_at_first = config.option.maxfail == 1  # -x is --maxfail=1
    results: list[tuple[str, int, float]] = []
    together = (
        {s: p for s, p in plan.items() if s in MEMBERS} if config.option.members_in_parallel else {}
    )
    if len(together) > 1:
        results += _run_together(together, options, stop_at_first)
    for suite, paths in plan.items():
        if len(together) > 1 and suite in together:
            continue
        if stop_at_first and any(code not in (0, NO_TESTS) for _, code, _ in results):
            break
        command, cwd, env = _command(suite, options, paths)
        print(_banner(suite, options, paths), flush=True)
        started = time.monotonic()
        code = subprocess.run(command, cwd=cwd, env=env).returncode
        results.append((suite, code, time.monotonic() - started))
    print("\n===== workspace =====", flush=True)
    results.sort(key=lambda result: list(plan).index(result[0]))
    for suite, code, seconds in results:
        outcome = {0: "passed", NO_TESTS: "no tests selected"}.get(code, f"FAILED (exit {code})")
        print(f"{suite:<14} {outcome:<22} {seconds:6.1f}s", flush=True)
    failed = [code for _, code, _ in results if code not in (0, NO_TESTS)]
    if failed:
        return failed[0]
    return 0 if any(code == 0 for _, code, _ in results) else NO_TESTS
