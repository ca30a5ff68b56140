"""A TCP forwarder on loopback that the lab puts between the pipeline and its broker, to break
the link the ways a network does.

- `cut()` / `restore()`: the broker goes away cleanly — every connection reset, new ones refused
  (a restart, a crashed node) — and comes back.
- `blackhole()` / `heal()`: the link dies *silently*: no FIN, no RST, nothing. Every connection
  open at that moment stops carrying bytes in both directions for good (a NAT or load balancer
  that forgot the flow, a pulled cable, a frozen VM); connections opened while it holds are
  accepted and then carry nothing either (the handshake is never answered). After `heal()` new
  connections flow again; the old ones stay dead until their ends give up on them. A dead
  connection is never closed towards the other end: the client and the broker each have to
  notice on their own (AMQP heartbeats, deadlines), as they would on a real network.

What this cannot imitate: the proxy's kernel still acknowledges the bytes a client sends, so a
TCP-level timeout (`TCP_USER_TIMEOUT`, keepalive probes) does not fire on a black-holed
connection; AMQP heartbeats and application deadlines — which detect every kind of dead link —
do.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit


@dataclass(eq=False)
class _Link:
    client: socket.socket
    upstream: socket.socket | None
    dead: bool = False
    forwarded: int = 0  # bytes carried
    dropped: int = 0  # bytes swallowed since it died
    closed: set[str] = field(default_factory=set)


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._listener: socket.socket | None = None
        self._links: set[_Link] = set()
        self._blackholed = False
        self._lock = threading.Lock()
        self.swallowed = 0  # bytes dropped on dead links, ever

    @classmethod
    def for_url(cls, amqp_url: str) -> TcpProxy:
        parts = urlsplit(amqp_url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 5672)

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    # --- what the lab sees ---------------------------------------------------------------

    @property
    def open_links(self) -> int:
        with self._lock:
            return sum(not link.dead for link in self._links)

    @property
    def dead_links(self) -> int:
        with self._lock:
            return sum(link.dead for link in self._links)

    @property
    def dropped_bytes(self) -> int:
        """Bytes swallowed so far by the dead links still open."""
        with self._lock:
            return sum(link.dropped for link in self._links)

    @property
    def blackholed(self) -> bool:
        return self._blackholed

    # --- the faults ----------------------------------------------------------------------

    def blackhole(self) -> int:
        """Every connection, open or new, carries nothing from now on; returns how many open
        connections died."""
        with self._lock:
            self._blackholed = True
            alive = [link for link in self._links if not link.dead]
            for link in alive:
                link.dead = True
        return len(alive)

    def heal(self) -> None:
        """New connections flow again; the black-holed ones stay dead."""
        self._blackholed = False

    def cut(self) -> None:
        """The broker is gone: every connection reset, every new one refused."""
        if self._listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would not.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                self._listener.close()
            self._listener = None
        with self._lock:
            links = list(self._links)
        for link in links:
            for sock in (link.client, link.upstream):
                if sock is not None:
                    self._close(sock)

    def restore(self) -> None:
        self.start()

    def stop(self) -> None:
        self.cut()

    # --- forwarding ----------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            if self._blackholed:
                # Accepted by the kernel anyway; nothing ever answers on it.
                link = _Link(client, None, dead=True)
            else:
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                    upstream.settimeout(None)
                except OSError:
                    client.close()
                    continue
                # Forward each piece at once, as the endpoints (pika, RabbitMQ) and real proxies
                # do: with Nagle's algorithm here, a frame split in two waits for the other
                # side's delayed ACK (~40 ms) — every request-reply (a publisher confirm, a
                # basic.get) took that long through the lab's proxy.
                for sock in (client, upstream):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                link = _Link(client, upstream)
            with self._lock:
                self._links.add(link)
            threading.Thread(
                target=self._pump, args=(link, link.client, link.upstream, "client"), daemon=True
            ).start()
            if link.upstream is not None:
                threading.Thread(
                    target=self._pump,
                    args=(link, link.upstream, link.client, "upstream"),
                    daemon=True,
                ).start()

    def _pump(
        self, link: _Link, source: socket.socket, sink: socket.socket | None, side: str
    ) -> None:
        try:
            while data := source.recv(65536):
                if link.dead or sink is None:
                    link.dropped += len(data)  # swallowed: the other end never hears of it
                    self.swallowed += len(data)
                    continue
                sink.sendall(data)
                link.forwarded += len(data)
        except OSError:
            pass
        # This end closed (or reset) its side. On a live link the other end hears of it; on a
        # dead one it does not: only this side's socket goes.
        self._close(source)
        with self._lock:
            link.closed.add(side)
            if not link.dead and sink is not None:
                link.closed.add("client" if side == "upstream" else "upstream")
            finished = link.closed >= ({"client"} if link.upstream is None else {
                "client", "upstream"})  # fmt: skip
            if finished:
                self._links.discard(link)
        if not link.dead and sink is not None:
            self._close(sink)

    @staticmethod
    def _close(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()

    def url(self, amqp_url: str) -> str:
        """`amqp_url` with its host and port replaced by the proxy's."""
        parts = urlsplit(amqp_url)
        credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit(parts._replace(netloc=f"{credentials}127.0.0.1:{self.port}"))


class BrokerProxies:
    """One `TcpProxy` per node of a (comma-separated) RabbitMQ URL; `url` is the same URL
    through them."""

    def __init__(self, amqp_url: str) -> None:
        self.node_urls = [part.strip() for part in amqp_url.split(",") if part.strip()]
        self.proxies = [TcpProxy.for_url(url) for url in self.node_urls]
        #: Proxies of the brokers' other listeners (a plugin's, such as STOMP): cut off and
        #: healed with the AMQP ones, not part of `url`.
        self.others: list[TcpProxy] = []

    def start(self) -> BrokerProxies:
        for proxy in self.proxies:
            proxy.start()
        return self

    def add(self, host: str, port: int) -> TcpProxy:
        """A started proxy in front of another listener of the broker (`others`)."""
        proxy = TcpProxy(host, port).start()
        self.others.append(proxy)
        return proxy

    @property
    def url(self) -> str:
        return ",".join(p.url(u) for p, u in zip(self.proxies, self.node_urls, strict=True))

    def blackhole(self) -> int:
        return sum(proxy.blackhole() for proxy in [*self.proxies, *self.others])

    def heal(self) -> None:
        for proxy in [*self.proxies, *self.others]:
            proxy.heal()

    @property
    def open_links(self) -> int:
        return sum(proxy.open_links for proxy in [*self.proxies, *self.others])

    @property
    def swallowed(self) -> int:
        return sum(proxy.swallowed for proxy in [*self.proxies, *self.others])

    def stop(self) -> None:
        for proxy in [*self.proxies, *self.others]:
            proxy.stop()
