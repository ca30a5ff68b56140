"""A Redis server of the lab's own (the fault suite stops it), from the installed redis-server."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import redis

from apis_lab.net import free_port
from apis_lab.private_files import write_private


class RedisUnavailable(Exception):
    pass


@dataclass
class RedisServer:
    port: int = field(default_factory=free_port)
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="apis-redis-")))
    process: subprocess.Popen | None = None
    #: `requirepass` (and, with `username`, an ACL user of its own); None: no password.
    password: str | None = None
    username: str | None = None
    #: Snapshots to `base/dump.rdb` (and one at shutdown), loaded again at the next start:
    #: `apis up`'s private Redis keeps its data across runs. Off: nothing is written.
    persistent: bool = False

    @property
    def url(self) -> str:
        user, password = quote(self.username or "", safe=""), quote(self.password or "", safe="")
        auth = f"{user}:{password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def _arguments(self) -> list[str]:
        arguments = ["--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.base),
                     "--logfile", str(self.base / "redis.log"), "--appendonly", "no",
                     "--pidfile", str(self.base / "redis.pid"),
                     "--save", "300 1 60 1000" if self.persistent else ""]  # fmt: skip
        if self.password:
            # The password in a file of the owner's alone, not on the command line (where every
            # local user reads it in /proc until the server renames its process).
            secrets_file = self.base / "secrets.conf"
            quoted = '"' + self.password.replace("\\", "\\\\").replace('"', '\\"') + '"'
            lines = [f"requirepass {quoted}"]
            if self.username and self.username != "default":
                # An ACL user of its own; the default user keeps the same password.
                lines.append(f'user {self.username} on ">{quoted[1:-1]}" ~* &* +@all')
            write_private(secrets_file, "\n".join(lines) + "\n")
            arguments = [str(secrets_file), *arguments]
        return arguments

    def start(self, timeout: float = 15) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisUnavailable(
                "`redis-server` is not installed: the fault suite starts a Redis of its own "
                "(apt-get install redis-server)"
            )
        self.base.mkdir(parents=True, exist_ok=True)
        self.base.chmod(0o700)
        self.process = subprocess.Popen(
            [binary, *self._arguments()],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        client = redis.Redis(
            port=self.port,
            username=self.username,
            password=self.password,
            socket_connect_timeout=0.5,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return self
            except redis.RedisError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()  # a server that did not answer in time is not left running
                    raise RedisUnavailable(
                        f"redis-server on port {self.port} did not start (log: {self.base})"
                    ) from None
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self, delete: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
        if delete:
            with contextlib.suppress(OSError):
                shutil.rmtree(self.base)
