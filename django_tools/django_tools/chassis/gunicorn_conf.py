"""gunicorn's configuration for both services (`--config
python:django_tools.chassis.gunicorn_conf`, in `apis up` and the containers' command): a server
bound off loopback refuses to start while a public default is in effect (django_tools.exposure),
in one line naming what to set."""

from __future__ import annotations

import sys


def on_starting(server) -> None:
    """Before the master opens its sockets (with `--preload` the app is already loaded)."""
    from django_tools import exposure

    exposed = [address for address in server.cfg.address if not exposure.is_loopback_bind(address)]
    if not exposed:
        return
    server.app.wsgi()  # Django loaded (a no-op with --preload)
    from django.db import connections

    try:
        problems = exposure.service_problems(admins=True)
    finally:
        connections.close_all()  # the workers fork from here: no connection shared with them
    if problems:
        where = ", ".join(_bind(address) for address in exposed)
        print(f"gunicorn: {exposure.refusal(problems, where)}", file=sys.stderr, flush=True)
        sys.exit(1)


def _bind(address) -> str:
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address)
