"""docker-compose.yaml as the tests read it, without a Docker engine: the file itself and
Compose's interpolation of `${VAR}` (the values a `.env` file would give)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

COMPOSE_FILE = Path(__file__).resolve().parents[1] / "docker-compose.yaml"
_NAME = re.compile(r"\w+")


def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def interpolate(value: str, environ: dict[str, str] | None = None) -> str:
    """Compose's interpolation: `${VAR}`, `${VAR:-default}`, `${VAR-default}` (a default may
    nest another `${...}`), `$VAR`, and `$$` for a literal `$`."""
    environ = {} if environ is None else environ
    out, i = [], 0
    while i < len(value):
        if value[i] != "$":
            out.append(value[i])
            i += 1
        elif value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("${", i):
            depth, j = 1, i + 2
            while depth:
                if value.startswith("${", j):
                    depth, j = depth + 1, j + 2
                    continue
                depth -= value[j] == "}"
                j += 1
            body = value[i + 2 : j - 1]
            name = _NAME.match(body).group(0)
            rest = body[len(name) :]
            if rest.startswith(":-"):
                out.append(environ.get(name) or interpolate(rest[2:], environ))
            elif rest.startswith("-"):
                out.append(environ[name] if name in environ else interpolate(rest[1:], environ))
            else:
                out.append(environ.get(name, ""))
            i = j
        else:
            name = _NAME.match(value, i + 1)
            out.append(environ.get(name.group(0), "") if name else "$")
            i = name.end() if name else i + 1
    return "".join(out)


def variables(value: str) -> set[str]:
    """The names a value interpolates (nested defaults included)."""
    return set(re.findall(r"\$\{(\w+)", value.replace("$$", "")))
