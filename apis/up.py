"""`apis up`: migrate both services, then run every process of the lab in the foreground:
both APIs under gunicorn, the outbox relay of api_produtos, the consumer of api_feed, and each
service's Celery worker and beat.

The processes are supervised by honcho: one line-prefixed log stream, Ctrl-C or SIGTERM stops
them all (SIGKILL after a grace period), and if one of them dies the others are stopped too.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import unquote

from honcho.manager import Manager
from honcho.printer import Printer

from apis.infra import RABBITMQ, REDIS, InfraProblem, Infrastructure
from apis_lab.catalogue import FEED, PRODUTOS, SERVICES, EcosystemOptions, Service, processes
from django_tools.env import (
    BAD_SETTING_EXIT,
    DEFAULT_RABBITMQ_URL,
    DEFAULT_REDIS_URL,
    URL_VARIABLES,
    ImproperlyConfiguredEnv,
    parse_replication_mode,
    scrub,
)
from django_tools.exposure import (
    WRITE_KEYS,
    env_problems,
    is_default_password,
    is_loopback_bind,
    refusal,
)

READY_TIMEOUT = 60.0
#: The banner waits, once both APIs answer, for the other processes' start-up output to stop
#: (this long without a line), so that it is not buried; never longer than QUIET_MAX.
QUIET_FOR = 1.0
QUIET_MAX = 15.0
#: Where each service's admin lives, and the replica's dead-letter page in it.
ADMIN_PATH = "/admin/"
DEAD_LETTERS_PATH = "/admin/cqrs_replica/deadletter/"


class Abort(Exception):
    """A start-up problem, explained in one line."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class Stopped(Exception):
    """SIGTERM before the processes run (during migrations or while the infra starts)."""


def check_exposure(host: str, create_admin_user: bool) -> None:
    """Off loopback, nothing starts while a public default is in effect (django_tools.exposure):
    one line naming everything to set, for both services."""
    if is_loopback_bind(host):
        return
    found: dict[str, list[str]] = {}
    for service in SERVICES:
        for problem in env_problems(service.env(), service.name):
            found.setdefault(problem, []).append(service.name)
    # A problem of one service only is named with it, unless its variable is that service's
    # own (PRODUTOS_API_KEY).
    problems = [
        problem
        if len(names) == len(SERVICES) or problem.startswith(tuple(WRITE_KEYS.values()))
        else f"{problem} ({', '.join(names)})"
        for problem, names in found.items()
    ]
    if create_admin_user and is_default_password(
        os.environ.get("APIS_ADMIN_PASSWORD"), os.environ.get("APIS_ADMIN_USER") or "admin"
    ):
        problems.append("APIS_ADMIN_PASSWORD (not a default)")
    if problems:
        raise Abort(refusal(problems, f"--host {host}"))


def check_admin_accounts(host: str) -> None:
    """Off loopback, no account of either service may keep a default password (admin/admin):
    the databases say, after their migrations."""
    if is_loopback_bind(host):
        return
    problems = []
    for service in SERVICES:
        result = subprocess.run(
            service.manage("exposure_check", "--admins-only"),
            cwd=service.directory,
            env=service.env(),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            said = (result.stderr.strip().splitlines() or ["exposure_check failed"])[-1]
            problems.append(f"{said.removeprefix('CommandError: ')} in {service.directory.name}")
    if problems:
        raise Abort(refusal(problems, f"--host {host}"))


def check_settings() -> None:
    """Both services' settings load (each as it runs: its env file included); a bad one is
    the service's own line (variable, value, what is accepted) and exit 2."""
    checks = {}
    for service in SERVICES:
        checks[service] = subprocess.Popen(
            [sys.executable, "-m", "django_tools.chassis.settings.check",
             f"{service.project}.settings", service.directory.name],
            cwd=service.directory, env=service.env(), stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
    said = []
    try:
        for service, process in checks.items():
            try:
                _, stderr = process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                raise Abort(
                    f"{service.directory.name}: its settings did not load within 60 s"
                ) from None
            if process.returncode != 0:
                line = (stderr.strip().splitlines() or ["its settings do not load"])[-1]
                bad_setting = process.returncode == BAD_SETTING_EXIT
                said.append(line if bad_setting else f"{service.directory.name}: {line}")
    finally:
        # Interrupted or timed out: no check is left running behind `apis up`.
        for process in checks.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    if said:
        # The same variable, bad for both services, is said once.
        first = said[0].partition(": ")[2]
        if all(line.partition(": ")[2] == first for line in said):
            said = [f"{first} ({', '.join(s.directory.name for s in SERVICES)})"]
        raise Abort("; ".join(said), status=BAD_SETTING_EXIT)


def infrastructure_urls(services: tuple[Service, ...] = SERVICES) -> list[tuple[str, str]]:
    """RabbitMQ and Redis as each service would reach them (its env file included), each URL
    once."""
    urls: list[tuple[str, str]] = []
    for service in services:
        env = service.env()
        for label, url in (
            (RABBITMQ, env.get("RABBITMQ_URL") or DEFAULT_RABBITMQ_URL),
            (REDIS, env.get("REDIS_URL") or DEFAULT_REDIS_URL),
        ):
            if (label, url) not in urls:
                urls.append((label, url))
    return urls


def check_ports_free(host: str, ports: list[int]) -> None:
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise Abort(
                    f"port {port} on {host} is in use ({exc.strerror}): stop whatever holds it "
                    "(another `apis up` or a runserver) or pick other ports with "
                    "--produtos-port/--feed-port"
                ) from exc


def migrate(service: Service) -> None:
    print(f"apis up: applying the migrations of {service.directory.name}", flush=True)
    result = subprocess.run(
        service.manage("migrate", "--noinput"), cwd=service.directory, env=service.env()
    )
    if result.returncode != 0:
        raise Abort(f"the migrations of {service.directory.name} failed (see above)")


def declare_broker_topology() -> None:
    """The replica's queue must exist before the master accepts writes, or the exchange drops
    the first events while the consumer is still starting."""
    result = subprocess.run(
        FEED.manage("cqrs_declare"),
        cwd=FEED.directory,
        env=FEED.env(),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        said = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise Abort(f"declaring the replica's queues failed: {said[-500:]}")


@dataclass(frozen=True)
class AdminAccount:
    """The superuser `apis up --create-admin` makes (or updates) in both services."""

    user: str
    password: str
    #: The password is the default "admin" (APIS_ADMIN_PASSWORD not set): local use only.
    default: bool

    @classmethod
    def from_env(cls, host: str) -> AdminAccount:
        user = os.environ.get("APIS_ADMIN_USER") or "admin"
        password = os.environ.get("APIS_ADMIN_PASSWORD")
        default = is_default_password(password, user)  # unset counts as the default "admin"
        if default and not is_loopback_bind(host):
            raise Abort(
                f"--create-admin with --host {host} needs APIS_ADMIN_PASSWORD (not a default; "
                "and APIS_ADMIN_USER): the default admin/admin is only for a lab on 127.0.0.1"
            )
        return cls(user, password or "admin", default=default)

    def banner(self) -> str:
        """Who logs in, never with what: the password is not printed, even the default one."""
        if self.default:
            return (
                f"user {self.user}, the default password (local use only: "
                "set APIS_ADMIN_USER / APIS_ADMIN_PASSWORD)"
            )
        return f"user {self.user}, password from APIS_ADMIN_PASSWORD"


#: Creates or updates the superuser named in the environment (never on the command line, where
#: `ps` would show the password).
_CREATE_ADMIN = """
import os
from django.contrib.auth import get_user_model
User = get_user_model()
user = User.objects.filter(**{User.USERNAME_FIELD: os.environ["APIS_ADMIN_USER"]}).first()
if user is None:
    user = User(**{User.USERNAME_FIELD: os.environ["APIS_ADMIN_USER"]})
user.is_active = user.is_staff = user.is_superuser = True
user.set_password(os.environ["APIS_ADMIN_PASSWORD"])
user.save()
"""


def create_admin(service: Service, account: AdminAccount) -> None:
    print(f"apis up: admin user {account.user!r} in {service.directory.name}", flush=True)
    result = subprocess.run(
        service.manage("shell", "--no-imports", "-c", _CREATE_ADMIN),
        cwd=service.directory,
        env=service.env(APIS_ADMIN_USER=account.user, APIS_ADMIN_PASSWORD=account.password),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise Abort(
            f"creating the admin user of {service.directory.name} failed: "
            f"{result.stderr.strip()[-500:]}"
        )


def rabbitmq_ui(url: str) -> str:
    """The management UI of the first node of RABBITMQ_URL, with its user (never the password):
    `http://host:15672 (user admin)`."""
    node = url.split(",")[0].strip()
    rest = node.partition("://")[2] or node
    userinfo, at, hostpart = rest.rpartition("@")
    user = unquote(userinfo.partition(":")[0]) if at else "guest"
    netloc = hostpart.split("/")[0].split("?")[0]
    if netloc.startswith("["):
        host = netloc[: netloc.index("]") + 1] if "]" in netloc else netloc
    else:
        host = netloc.rsplit(":", 1)[0] if ":" in netloc else netloc
    return f"http://{host or 'localhost'}:15672 (user {user or 'guest'})"


def replication_mode() -> str:
    """REPLICATION_MODE as both services see it (their env files included); they must agree."""
    modes = {}
    for service in SERVICES:
        try:
            modes[service.name] = parse_replication_mode(service.env().get("REPLICATION_MODE"))
        except ImproperlyConfiguredEnv as exc:
            raise Abort(f"{exc} ({service.name})") from exc
    if len(set(modes.values())) != 1:
        raise Abort(f"the services disagree on REPLICATION_MODE ({modes}): set the same in both")
    return modes[PRODUTOS.name]


def _healthy(url: str) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # nosec B310 # http URL built here
            return response.status == 200, ""
    except urllib.error.HTTPError as exc:
        return False, exc.read().decode(errors="replace")
    except OSError as exc:
        return False, str(exc)


class QuietPrinter(Printer):
    """honcho's printer, noting when the processes last said something: the banner waits for
    their start-up output to settle instead of being buried in it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.last_line = time.monotonic()

    def write(self, message) -> None:
        super().write(message)
        self.last_line = time.monotonic()

    def wait_quiet(self, stop: threading.Event) -> None:
        deadline = time.monotonic() + QUIET_MAX
        while not stop.is_set() and time.monotonic() < deadline:
            if time.monotonic() - self.last_line >= QUIET_FOR:
                return
            stop.wait(0.1)


def announce_when_ready(
    options: EcosystemOptions,
    stop: threading.Event,
    admin: AdminAccount | None = None,
    printer: QuietPrinter | None = None,
    infra: Infrastructure | None = None,
) -> None:
    # Health is polled (and URLs printed) on loopback whatever interface the APIs bind.
    host = "127.0.0.1" if options.host in ("0.0.0.0", "::", "127.0.0.1") else options.host  # nosec B104 # compared, not bound
    urls = {
        "API Produtos": f"http://{host}:{options.produtos_port}",
        "API Feed": f"http://{host}:{options.feed_port}",
    }
    deadline = time.monotonic() + READY_TIMEOUT
    pending = dict(urls)
    last_problem = ""
    while pending and not stop.is_set() and time.monotonic() < deadline:
        for name, base in list(pending.items()):
            ok, problem = _healthy(f"{base}/health")
            if ok:
                del pending[name]
            else:
                last_problem = problem
        stop.wait(0.5)
    if stop.is_set():
        return
    if pending:
        print(
            f"apis up: not healthy after {READY_TIMEOUT:.0f}s: {', '.join(pending)} "
            f"({scrub(last_problem.strip(), _urls())[:300]})",
            flush=True,
        )
        return
    if printer is not None:
        printer.wait_quiet(stop)
        if stop.is_set():
            return
    print(banner(urls, admin, infra), flush=True)


def banner(
    urls: dict[str, str], admin: AdminAccount | None, infra: Infrastructure | None = None
) -> str:
    """What is where, between two rules: the processes' start-up output is above it."""
    rule = "=" * 78
    lines = ["", rule, "apis up: ready"]
    for name, base in urls.items():
        lines.append(f"  {name:<13} {base}/api/  docs {base}/api/docs  health {base}/health")
    lines.append(
        "  status        "
        f"{urls['API Produtos']}/api/outbox/status  {urls['API Feed']}/api/replication/status"
    )
    lines.append(f"  metrics       {urls['API Produtos']}/metrics  {urls['API Feed']}/metrics")
    lines.append(
        f"  admin         {urls['API Produtos']}{ADMIN_PATH}  {urls['API Feed']}{ADMIN_PATH}  "
        f"dead letters {urls['API Feed']}{DEAD_LETTERS_PATH}"
    )
    if admin is not None:
        lines.append(f"  admin login   {admin.banner()}")
    else:
        lines.append(
            "  admin login   none created: `apis up --create-admin`, or "
            "`cd api_produtos && uv run manage.py createsuperuser` (same in api_feed)"
        )
    rabbitmq_url = PRODUTOS.env().get("RABBITMQ_URL") or DEFAULT_RABBITMQ_URL
    private_ui = infra.management_url() if infra is not None else None
    if private_ui:
        user = infra.rabbit_nodes[0].user
        lines.append(f"  RabbitMQ UI   {private_ui} (user {user}, the private node)")
    else:
        lines.append(f"  RabbitMQ UI   {rabbitmq_ui(rabbitmq_url)}")
    if infra is not None and infra.started:
        lines.append(f"  infra         private, started by apis up: data in {infra.data_dir}")
    lines.append("  Ctrl-C stops everything.")
    lines.append(rule)
    return "\n".join(lines)


def _urls() -> list[str]:
    """Every URL either service uses: what `scrub` must hide from our output."""
    return [
        value
        for service in SERVICES
        for name in URL_VARIABLES
        if (value := service.env().get(name))
    ]


def _stopped_by_sigterm(signum, frame) -> None:
    raise Stopped()


def _hangup_as_sigterm(signum, frame) -> None:
    # A closed terminal (SIGHUP) stops everything the way SIGTERM does, whoever handles SIGTERM
    # at that moment (this module, then honcho): its default would end the process without
    # `finally`, leaving the private broker and Redis running.
    os.kill(os.getpid(), signal.SIGTERM)


def up(
    options: EcosystemOptions, *, create_admin_user: bool = False, start_infra: bool = True
) -> int:
    """Everything in the foreground; the private infrastructure it started (if any) stops on
    every way out: Ctrl-C, SIGTERM, a child that died, an error."""
    infra = Infrastructure()
    # Until honcho takes the signals over: SIGTERM unwinds like Ctrl-C, through `finally`.
    previous = signal.signal(signal.SIGTERM, _stopped_by_sigterm)
    hangup = signal.signal(signal.SIGHUP, _hangup_as_sigterm)
    try:
        return _up(options, create_admin_user, start_infra, infra)
    except (KeyboardInterrupt, Stopped):
        return 130
    finally:
        # A second Ctrl-C or SIGTERM must not leave a private server half-stopped (each stop
        # is bounded in time: SIGKILL at the end).
        interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            infra.stop()
        finally:
            signal.signal(signal.SIGINT, interrupt)
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGHUP, hangup)


def _up(
    options: EcosystemOptions,
    create_admin_user: bool,
    start_infra: bool,
    infra: Infrastructure,
) -> int:
    admin = None
    try:
        check_exposure(options.host, create_admin_user)
        mode = replication_mode()
        if create_admin_user:
            admin = AdminAccount.from_env(options.host)
        check_settings()
        check_ports_free(options.host, [options.produtos_port, options.feed_port])
        try:
            infra.ensure(infrastructure_urls(), no_infra=not start_infra)
        except InfraProblem as exc:
            raise Abort(str(exc)) from None
        for service in SERVICES:
            migrate(service)
            if admin is not None:
                create_admin(service, admin)
        check_admin_accounts(options.host)
        declare_broker_topology()
    except Abort as exc:
        # One line, whatever a URL or a child's error said: no password in it.
        print(f"apis up: {scrub(str(exc), _urls())}", file=sys.stderr, flush=True)
        return exc.status

    # Every process of a service (its gunicorn workers, relay or consumer) writes its Prometheus
    # samples into the service's folder, and /metrics adds them up.
    metrics_dirs = {
        service.name: tempfile.mkdtemp(prefix=f"apis-metrics-{service.name}-")
        for service in SERVICES
    }
    state_dir = tempfile.mkdtemp(prefix="apis-state-")  # Celery beat's schedule files
    printer = QuietPrinter(sys.stdout)
    manager = Manager(printer=printer)
    print(f"apis up: replication mode {mode}", flush=True)
    for name, (command, service) in processes(options, state_dir, mode).items():
        env = service.env(PROMETHEUS_MULTIPROC_DIR=metrics_dirs[service.name])
        # The master's reconciliation reads this lab's replica unless told otherwise.
        env.setdefault("FEED_URL", f"http://127.0.0.1:{options.feed_port}")
        # honcho runs commands through a shell; exec hands the pid over to the real process.
        manager.add_process(
            name, f"exec {shlex.join(command)}", env=env, cwd=str(service.directory)
        )
    stop = threading.Event()
    watcher = threading.Thread(
        target=announce_when_ready, args=(options, stop, admin, printer, infra), daemon=True
    )
    watcher.start()
    try:
        manager.loop()
    finally:
        stop.set()
        for folder in [*metrics_dirs.values(), state_dir]:
            shutil.rmtree(folder, ignore_errors=True)
    return manager.returncode or 0
