"""pytest plugin: one `uv run pytest` at the root runs every workspace member's suite.

A Django process is configured with one settings module, and api_produtos and api_feed each
need their own. So the root session does not import the members' tests: it asks a pytest
subprocess in the member's folder which tests exist (`--collect-only`), shows them as its own
items (same node ids, prefixed with the member folder, so `-k` and the summary work as usual),
and runs them in one pytest subprocess per member, whose reports come back as JSON lines.

In a member folder, plain `uv run pytest` runs that member's suite directly.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Workspace members whose suites run in their own process, each with its own settings.
MEMBERS = ("django_tools", "api_produtos", "api_feed")
REPORT_ENV = "APIS_PYTEST_REPORT"
COLLECT_TIMEOUT = 180


class ChildFailure(Exception):
    """A member's test failed (or could not run) in its subprocess."""


# --- in the member's subprocess ---------------------------------------------------------


class ChildReporter:
    def __init__(self, path: str) -> None:
        self._file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        reason = ""
        if report.skipped and isinstance(report.longrepr, tuple):
            reason = report.longrepr[2]
        elif report.failed or report.skipped:
            reason = report.longreprtext
        record = {
            "nodeid": report.nodeid,
            "when": report.when,
            "outcome": report.outcome,
            "text": reason,
            "sections": [list(s) for s in report.sections] if report.failed else [],
            "wasxfail": getattr(report, "wasxfail", None),
        }
        self._file.write(json.dumps(record) + "\n")


def pytest_configure(config: pytest.Config) -> None:
    report_path = os.environ.get(REPORT_ENV)
    if report_path:
        config.pluginmanager.register(ChildReporter(report_path), "apis-child-reporter")


# --- in the root session ------------------------------------------------------------------


def _is_root_session(config: pytest.Config) -> bool:
    return config.rootpath == REPO_ROOT and not os.environ.get(REPORT_ENV)


@pytest.hookimpl(tryfirst=True)
def pytest_collect_directory(path: Path, parent: pytest.Collector):
    if _is_root_session(parent.config) and path.parent == REPO_ROOT and path.name in MEMBERS:
        return MemberSuite.from_parent(parent, path=path)
    return None


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", REPORT_ENV)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class MemberSuite(pytest.Directory):
    """A member folder; its tests are collected and run by a pytest subprocess there."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.run: MemberRun | None = None
        self.selected: list[str] = []
        self.workdir: Path | None = None

    def start_run(self) -> MemberRun:
        """Members run one at a time, each started by its first test, so that the two cores
        are never shared between two Django suites."""
        if self.run is None:
            self.run = MemberRun(self, self.selected, self.workdir)
        return self.run

    def collect(self):
        cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
        try:
            proc = subprocess.run(
                cmd,
                cwd=self.path,
                env=_child_env(),
                capture_output=True,
                text=True,
                timeout=COLLECT_TIMEOUT,
            )
        except subprocess.TimeoutExpired as exc:
            raise self.CollectError(f"collecting {self.path.name} timed out") from exc
        if proc.returncode not in (0, 5):  # 5: no tests
            raise self.CollectError(
                f"collecting the tests of {self.path.name} failed "
                f"(exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        by_file: dict[str, list[str]] = defaultdict(list)
        for line in proc.stdout.splitlines():
            file_part, sep, rest = line.strip().partition("::")
            if sep and file_part.endswith(".py"):
                by_file[file_part].append(rest)
        for file_part, names in by_file.items():
            member_file = MemberFile.from_parent(self, path=self.path / file_part)
            member_file.test_names = names
            yield member_file

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, self.CollectError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class MemberFile(pytest.File):
    test_names: list[str]

    def collect(self):
        for name in self.test_names:
            yield MemberTest.from_parent(self, name=name)


class MemberTest(pytest.Item):
    @property
    def suite(self) -> MemberSuite:
        return self.parent.parent

    @property
    def child_nodeid(self) -> str:
        return f"{self.path.relative_to(self.suite.path).as_posix()}::{self.name}"

    def runtest(self) -> None:
        reports = self.suite.start_run().wait_for(self.child_nodeid)
        failed = [r for r in reports if r["outcome"] == "failed"]
        if failed:
            parts = []
            for report in failed:
                parts.append(f"[{report['when']}] {report['text']}")
                parts.extend(f"--- {title} ---\n{content}" for title, content in report["sections"])
            raise ChildFailure("\n".join(parts))
        for report in reports:
            if report["outcome"] == "skipped":
                if report["wasxfail"] is not None:
                    pytest.xfail(report["wasxfail"] or report["text"])
                pytest.skip(report["text"])

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, ChildFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, self.child_nodeid


class MemberRun:
    """One pytest subprocess running the selected tests of a member, streaming reports."""

    def __init__(self, suite: MemberSuite, nodeids: list[str], workdir: Path) -> None:
        self.suite = suite
        self.report_path = workdir / f"{suite.path.name}.jsonl"
        self.log_path = workdir / f"{suite.path.name}.log"
        self.report_path.touch()
        self._offset = 0
        self._reports: dict[str, list[dict]] = defaultdict(list)
        self._done: set[str] = set()
        cmd = [sys.executable, "-m", "pytest", "-p", "apis.pytest_workspace", "-p"]
        cmd += ["no:cacheprovider", "-q", *nodeids]
        self._log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd,
            cwd=suite.path,
            env=_child_env(**{REPORT_ENV: str(self.report_path)}),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _read_new(self) -> None:
        with open(self.report_path, encoding="utf-8") as fh:
            fh.seek(self._offset)
            while True:
                line = fh.readline()
                if not line.endswith("\n"):
                    break
                self._offset = fh.tell()
                report = json.loads(line)
                self._reports[report["nodeid"]].append(report)
                if report["when"] == "teardown":
                    self._done.add(report["nodeid"])

    def wait_for(self, nodeid: str) -> list[dict]:
        while True:
            self._read_new()
            if nodeid in self._done:
                return self._reports[nodeid]
            if self.proc.poll() is not None:
                self._read_new()
                if nodeid in self._done:
                    return self._reports[nodeid]
                raise ChildFailure(
                    f"the pytest process of {self.suite.path.name} exited "
                    f"(code {self.proc.returncode}) without reporting {nodeid}; "
                    f"its output ({self.log_path}) ends with:\n{self.tail()}"
                )
            time.sleep(0.02)

    def tail(self, lines: int = 60) -> str:
        self._log.flush()
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self._log.closed:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """Tell each member which of its tests were selected (after -k/-m deselection)."""
    if not _is_root_session(session.config):
        return
    workdir = None
    for item in session.items:
        if isinstance(item, MemberTest):
            workdir = workdir or Path(tempfile.mkdtemp(prefix="apis-pytest-"))
            item.suite.workdir = workdir
            item.suite.selected.append(item.child_nodeid)


def pytest_sessionfinish(session: pytest.Session) -> None:
    for item in session.items:
        if isinstance(item, MemberTest) and item.suite.run is not None:
            item.suite.run.stop()
