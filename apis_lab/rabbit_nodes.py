"""Private RabbitMQ nodes and clusters (`RabbitNode`, `RabbitCluster`) started from the installed
rabbitmq-server; used by the fault suite, the cluster and broker tests (and any test needing
policies or faults on a broker).

A fault suite stops, restarts and cuts its broker; doing that to the machine's (or a
developer's) shared RabbitMQ would break everything else using it. A `RabbitNode` has its own
node name, ports, data and log folders and Erlang cookie, runs as the current user from the
package's own scripts (not the Debian wrapper, which switches to the `rabbitmq` user), and is
stopped and deleted afterwards. The machine's default node is never touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from apis_lab.net import free_port
from apis_lab.private_files import write_private
from django_tools.heartbeat import pid_alive

#: Where the server's own scripts are (Debian/Ubuntu package first, then PATH).
SBIN_CANDIDATES = ("/usr/lib/rabbitmq/bin", "/usr/local/lib/rabbitmq/bin")
START_TIMEOUT = 90.0
#: What rabbitmq.conf takes as a plain value (a user, password or vhost for the first boot).
_CONF_SAFE = re.compile(r"[A-Za-z0-9_.~/-]+")


class BrokerUnavailable(Exception):
    """No rabbitmq-server installed, or the node would not start; the message says why."""


def _sbin(name: str) -> str:
    for folder in SBIN_CANDIDATES:
        path = Path(folder) / name
        if path.exists():
            return str(path)
    found = shutil.which(name)
    if found is None:
        raise BrokerUnavailable(
            f"`{name}` is not installed: the lab starts RabbitMQ nodes of its own from the "
            "installed rabbitmq-server (apt-get install rabbitmq-server)"
        )
    return found


def server_installed() -> str:
    """The installed rabbitmq-server script; BrokerUnavailable (saying what to install) when
    there is none."""
    return _sbin("rabbitmq-server")


@dataclass
class RabbitNode:
    """One RabbitMQ node of the lab's own on 127.0.0.1."""

    name: str = field(default_factory=lambda: f"apislab{secrets.token_hex(3)}")
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    cookie: str = field(default_factory=lambda: secrets.token_hex(16))
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="apis-rabbit-")))
    user: str = "guest"
    password: str = "guest"
    #: `cluster_partition_handling` (a cluster's nodes get `pause_minority`); None: the
    #: server's default.
    partition_handling: str | None = None
    #: The free disk space below which the node blocks publishers (see `set_disk_alarm`).
    disk_free_limit: int = 1_000_000
    #: The vhost `user` gets (created by `ensure_user`, and on the node's first boot).
    vhost: str = "/"
    #: The management plugin's HTTP port (UI and API on 127.0.0.1); None: plugin off.
    management_port: int | None = None
    #: More plugins of the installed server to enable (`rabbitmq_stomp` for a peer library of
    #: the lab); a plugin's listener, when it has one, is on 127.0.0.1 too (`stomp_port`).
    plugins: tuple[str, ...] = ()
    #: The STOMP listener's port when `rabbitmq_stomp` is among `plugins` (a free one unless
    #: set): never the plugin's default 61613 on every interface.
    stomp_port: int | None = None
    #: `stop()` keeps `base` (mnesia, logs, cookie): the next `start()` of a node of the same
    #: name finds its users, queues and messages again (`apis up`'s private broker).
    keep_data: bool = False

    def __post_init__(self) -> None:
        if "rabbitmq_stomp" in self.plugins and self.stomp_port is None:
            self.stomp_port = free_port()

    @property
    def node(self) -> str:
        return f"{self.name}@localhost"

    @property
    def url(self) -> str:
        user, password = quote(self.user, safe=""), quote(self.password, safe="")
        vhost = "" if self.vhost == "/" else quote(self.vhost, safe="")
        return f"amqp://{user}:{password}@127.0.0.1:{self.port}/{vhost}"

    @property
    def log_file(self) -> Path:
        return self.base / "log" / f"{self.node}.log"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        env.update(
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_PID_FILE=str(self.base / "pid"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq.conf"),
            # Erlang's distribution and epmd on loopback too: they would otherwise listen on
            # every interface, and whoever reaches them with the cookie runs code on the node.
            ERL_EPMD_ADDRESS="127.0.0.1",
            # The cookie is read from $HOME/.erlang.cookie (written owner-only by `start`), never
            # passed on a command line, where every local user could read it in /proc.
            HOME=str(self.base),
        )
        return env

    @property
    def management_url(self) -> str | None:
        return f"http://127.0.0.1:{self.management_port}" if self.management_port else None

    def _config(self) -> str:
        lines = [
            f"listeners.tcp.default = 127.0.0.1:{self.port}",
            "distribution.listener.interface = 127.0.0.1",
            # A node of tests: disk alarms must not block publishers on a busy CI disk (the
            # fault suite raises one on purpose: `set_disk_alarm`).
            f"disk_free_limit.absolute = {self.disk_free_limit}",
        ]
        if self.partition_handling:
            lines.append(f"cluster_partition_handling = {self.partition_handling}")
        if self.management_port:
            lines += [
                "management.tcp.ip = 127.0.0.1",
                f"management.tcp.port = {self.management_port}",
            ]
        if "rabbitmq_stomp" in self.plugins:
            lines.append(f"stomp.listeners.tcp.1 = 127.0.0.1:{self.stomp_port}")
        # The first boot creates `user` instead of guest when the values are plain enough for
        # rabbitmq.conf; otherwise (or when the data predates them) `ensure_user` does it.
        if (self.user, self.password, self.vhost) != ("guest", "guest", "/") and all(
            _CONF_SAFE.fullmatch(value) for value in (self.user, self.password, self.vhost)
        ):
            lines += [
                f"default_user = {self.user}",
                f"default_pass = {self.password}",
                f"default_vhost = {self.vhost}",
                "default_user_tags.administrator = true",
            ]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = START_TIMEOUT) -> RabbitNode:
        # The node's folder is its owner's alone: it holds the cookie and, in rabbitmq.conf,
        # the first user's password.
        self.base.mkdir(parents=True, exist_ok=True)
        self.base.chmod(0o700)
        for folder in ("mnesia", "log"):
            (self.base / folder).mkdir(parents=True, exist_ok=True)
        plugins = ",".join(
            (["rabbitmq_management"] if self.management_port else []) + list(self.plugins)
        )
        (self.base / "enabled_plugins").write_text(f"[{plugins}].\n")
        write_private(self.base / "rabbitmq.conf", self._config())
        write_private(self.base / ".erlang.cookie", self.cookie, mode=0o400)
        # A pid file left by an earlier run (kept data) names a process that may be anyone's
        # now: `halt` must only ever signal this start's node.
        (self.base / "pid").unlink(missing_ok=True)
        subprocess.run(
            [_sbin("rabbitmq-server"), "-detached"],
            env=self._env(), cwd=self.base, capture_output=True, timeout=60, check=False,
            # Out of the caller's session: a Ctrl-C in its terminal is the caller's to handle
            # (it stops the node in order), not the Erlang VM's.
            start_new_session=True,
        )  # fmt: skip
        self.await_startup(timeout)
        return self

    def ensure_user(self) -> None:
        """`user` with `password`, the administrator tag and every permission on `vhost`
        (created or updated: a node kept from an earlier run may have another password)."""
        # The password goes on rabbitmqctl's stdin (it reads it there when the argument is
        # left out), never on its command line, which any local user can read in `ps`.
        secret = f"{self.password}\n"
        if self.ctl("add_user", self.user, check=False, stdin=secret).returncode != 0:
            self.ctl("change_password", self.user, stdin=secret)
        self.ctl("set_user_tags", self.user, "administrator")
        self.ctl("add_vhost", self.vhost, check=False)  # exists already: fine
        self.ctl("set_permissions", "-p", self.vhost, self.user, ".*", ".*", ".*")

    def recreate_vhost(self, default_queue_type: str) -> None:
        """`vhost` deleted and created again, empty, giving a queue declared without a type
        `default_queue_type` (RabbitMQ 3.10 has no command to change it in place); `user`
        keeps every permission on it. For a node just started: whatever the vhost held is gone."""
        self.ctl("delete_vhost", self.vhost, check=False)  # not there: fine
        self.ctl("add_vhost", self.vhost, "--default-queue-type", default_queue_type)
        self.ctl("set_permissions", "-p", self.vhost, self.user, ".*", ".*", ".*")

    def await_startup(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            result = self.ctl("await_startup", "--timeout", "10", check=False, timeout=20)
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise BrokerUnavailable(
                    f"RabbitMQ node {self.node} did not start within {timeout:.0f}s: "
                    f"{result.stderr.strip()[-300:]} (log: {self.log_file})"
                )
            time.sleep(0.5)

    def ctl(
        self, *args: str, check: bool = True, timeout: float = 60, stdin: str | None = None
    ) -> subprocess.CompletedProcess:
        """`rabbitmqctl -n <this node> args`, `stdin` on its standard input."""
        try:
            result = subprocess.run(
                [_sbin("rabbitmqctl"), "-n", self.node, *args], input=stdin,
                env=self._env(), capture_output=True, text=True, timeout=timeout, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            # Named by its command only: its arguments may hold a password.
            raise BrokerUnavailable(
                f"rabbitmqctl {args[0]} on {self.node} did not answer within {timeout:.0f}s "
                f"(log: {self.log_file})"
            ) from None
        if check and result.returncode != 0:
            raise BrokerUnavailable(
                f"rabbitmqctl {args[0]} on {self.node} failed: "
                f"{(result.stdout + result.stderr).strip()[-500:]}"
            )
        return result

    # --- faults --------------------------------------------------------------------------

    def stop_app(self) -> None:
        """The broker goes away (connections dropped, new ones refused); the node stays."""
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.await_startup()

    def close_all_connections(self, reason: str = "closed by the lab") -> None:
        """Every client connection closed by the broker, as a failover or an operator does."""
        self.ctl("close_all_connections", "--global", reason)

    def pid(self) -> int | None:
        try:
            return int((self.base / "pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def halt(self) -> None:
        """The whole node goes down (its Erlang VM stops; SIGKILL if it does not), its data
        kept: `start()` brings it back, in its cluster."""
        pid = self.pid()
        with contextlib.suppress(subprocess.TimeoutExpired, BrokerUnavailable):
            self.ctl("stop", check=False, timeout=30)
        if pid is not None:
            deadline = time.monotonic() + 10
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def pause(self) -> int | None:
        """SIGSTOP the node's Erlang VM: the node is still there (its sockets accept, the
        kernel acknowledges) but answers nothing, as a frozen VM or a stalled disk does.
        Returns the pid stopped."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGSTOP)
        return pid

    def resume(self) -> None:
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def alarms(self) -> str:
        """The node's resource alarms, as `rabbitmqctl eval` prints them ("[]" when none)."""
        return self.ctl("eval", "rabbit_alarm:get_alarms().", timeout=30).stdout.strip()

    def set_disk_alarm(self, raised: bool) -> None:
        """A disk alarm (raised: a free-disk limit far above what the disk has) blocks every
        publishing connection of the cluster until it clears (the configured limit back)."""
        limit = 10**15 if raised else self.disk_free_limit  # a petabyte: never free here
        self.ctl("set_disk_free_limit", str(limit))

    def isolate(self) -> None:
        """Cut the node off from the rest of its cluster while it keeps running: a new Erlang
        cookie (the others can no longer connect to it, nor it to them) and every distribution
        link dropped — a network partition as the nodes see it."""
        cookie = secrets.token_hex(16)
        self.ctl(
            "eval",
            f"erlang:set_cookie(node(), '{cookie}'), "
            "[erlang:disconnect_node(N) || N <- nodes()], ok.",
        )  # fmt: skip
        self._own_cookie = self.cookie
        self._use_cookie(cookie)

    def _use_cookie(self, cookie: str) -> None:
        """The cookie `ctl` presents from now on (the node's own, changed by `isolate`)."""
        self.cookie = cookie
        write_private(self.base / ".erlang.cookie", cookie, mode=0o400)

    def rejoin(self, others: list[RabbitNode]) -> None:
        """Heal `isolate`: the cluster's cookie back, the others pinged."""
        original = getattr(self, "_own_cookie", None)
        if original is None:
            return
        peers = ", ".join(f"'{node.node}'" for node in others)
        self.ctl(
            "eval",
            f"erlang:set_cookie(node(), '{original}'), [net_adm:ping(N) || N <- [{peers}]], ok.",
        )  # fmt: skip
        self._use_cookie(original)
        self._own_cookie = None

    # --- the end -------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the node and delete its folders (unless `keep_data`)."""
        self.resume()  # a paused VM cannot stop
        if getattr(self, "_own_cookie", None):
            with contextlib.suppress(Exception):
                self.ctl("eval", f"erlang:set_cookie(node(), '{self._own_cookie}').", timeout=20)
            self._use_cookie(self._own_cookie)
        self.halt()
        if not self.keep_data:
            shutil.rmtree(self.base, ignore_errors=True)


@dataclass
class RabbitCluster:
    """`size` RabbitNodes of the lab's own, clustered: the first one started, the others joined
    to it. `url` lists every node (comma-separated), as RABBITMQ_URL takes them."""

    size: int = 3
    nodes: list[RabbitNode] = field(default_factory=list)
    #: What a node cut off from the others does: `pause_minority` (the advice for production
    #: too) stops a node that sees less than half the cluster, so clients move to the majority
    #: and no two sides ever accept writes apart.
    partition_handling: str = "pause_minority"

    def start(self) -> RabbitCluster:
        cookie, prefix = secrets.token_hex(16), f"apislab{secrets.token_hex(2)}"
        self.nodes = [
            RabbitNode(
                name=f"{prefix}n{i + 1}", cookie=cookie, partition_handling=self.partition_handling
            )
            for i in range(self.size)
        ]
        try:
            first, *others = self.nodes
            first.start()
            for node in others:
                node.start()
                node.ctl("stop_app")
                node.ctl("join_cluster", first.node)
                node.ctl("start_app")
                node.await_startup()
            running = first.ctl("cluster_status", "--formatter", "json").stdout
            missing = [n.node for n in self.nodes if n.node not in running]
            if missing:
                raise BrokerUnavailable(f"nodes {missing} did not join the cluster: {running}")
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def node_named(self, node: str) -> RabbitNode:
        return next(n for n in self.nodes if n.node == node)

    def leader(self, queue: str, vhost: str = "/") -> RabbitNode | None:
        """The node leading a quorum queue, as a running node sees it."""
        for asking in self.nodes:
            result = asking.ctl(
                "list_queues", "-p", vhost, "name", "leader", "--quiet", "--no-table-headers",
                check=False, timeout=30,
            )  # fmt: skip
            if result.returncode != 0:
                continue
            for line in result.stdout.splitlines():
                name, _, leader = line.strip().partition("\t")
                if name == queue and leader.strip():
                    return self.node_named(leader.strip())
        return None

    def running_nodes(self, asking: RabbitNode) -> list[str] | None:
        """The cluster's running nodes as `asking` sees them (None: it does not answer)."""
        result = asking.ctl("eval", "rabbit_nodes:all_running().", check=False, timeout=20)
        if result.returncode != 0:
            return None
        return [node.node for node in self.nodes if node.node in result.stdout]

    def partitions(self, asking: RabbitNode) -> str | None:
        """The partitions `asking` has seen (Erlang term; "[]" when none)."""
        result = asking.ctl("eval", "rabbit_node_monitor:partitions().", check=False, timeout=20)
        return result.stdout.strip() if result.returncode == 0 else None

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()
