"""What the admin parts of the reusable apps share (django_tools.outbox.admin,
django_tools.replica.admin): read-only model pages, the console's header, and how an age, a
time and a JSON body read."""

from __future__ import annotations

from datetime import datetime

import orjson
from django.apps import apps
from django.conf import settings
from django.contrib import admin
from django.utils.html import format_html
from django.utils.timezone import localtime

#: A body longer than this is shown cut (the page stays light with 100 big letters).
PRETTY_MAX_CHARS = 20_000


def console_role() -> str:
    """What this service is in the replication, as the console's header says it."""
    if apps.is_installed("django_tools.outbox"):
        return "mestre"
    if apps.is_installed("django_tools.replica"):
        return "réplica"
    return "serviço"


def set_up_console(site: admin.AdminSite) -> None:
    """The admin's header says which service it is (both services had the same
    "Administração do Django"): `Console — api_produtos (mestre)`. `SERVICE_LABEL` names the
    service (its `SERVICE_NAME` when unset)."""
    name = getattr(settings, "SERVICE_LABEL", None) or getattr(settings, "SERVICE_NAME", "")
    title = f"{name} ({console_role()})" if name else console_role()
    site.site_header = f"Console — {title}"
    site.site_title = f"Console {title}"
    site.index_title = "Console de operação"


class ReadOnlyModelAdmin(admin.ModelAdmin):
    """A model the admin shows and never changes: rows written only by the machinery (the
    relay, the consumer), never by hand. Viewing needs the model's view permission."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


def format_age(seconds: float | None) -> str:
    """A duration as an operator reads it: `42 s`, `3 min 5 s`, `2 h 10 min`, `3 d 4 h`."""
    if seconds is None:
        return "—"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def short_time(value: datetime | None) -> str:
    """A time as a list column shows it: `2026-01-01 10:00:02` in the site's time zone (the
    admin's long `1 de janeiro de 2026 às 10:00` widens every list)."""
    if value is None:
        return "—"
    return localtime(value).strftime("%Y-%m-%d %H:%M:%S")


def short_id(value: str, keep: int = 12):
    """A long id as a list column shows it: the first characters tell ids apart, the whole id
    is in the tooltip (and on the detail page)."""
    if len(value) <= keep:
        return value
    return format_html('<span title="{}">{}…</span>', value, value[:keep])


def pretty_json(text: str | bytes) -> str:
    """A body as an operator reads it: indented JSON when it is JSON, else the text as it is."""
    raw = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text
    try:
        pretty = orjson.dumps(orjson.loads(raw), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        pretty = raw
    if len(pretty) > PRETTY_MAX_CHARS:
        cut = len(pretty) - PRETTY_MAX_CHARS
        pretty = f"{pretty[:PRETTY_MAX_CHARS]}\n… ({cut} caracteres a mais)"
    return pretty


def folded_json(text: str | bytes, summary: str):
    """A body folded under `summary` (a <details>), pretty-printed and wrapped inside the page:
    it never runs off the page nor widens a list."""
    return format_html(
        '<details class="json-body"><summary>{}</summary><pre class="json-pretty">{}</pre>'
        "</details>",
        summary,
        pretty_json(text),
    )
