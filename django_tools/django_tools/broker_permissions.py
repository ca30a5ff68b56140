"""What RabbitMQ's ACCESS_REFUSED means for this project, said in one line.

Each service has a broker user of its own with least privilege (CQRS.md#permissões-no-broker):
when one lacks a permission, the broker closes the channel with a 403 naming the resource but
not the permission. This names the user, the resource and what each permission is for, where the
process would otherwise log a repr of pika's error and retry for ever.
"""

from __future__ import annotations

import re

DOCS = "CQRS.md#permissões-no-broker"
_REFUSED = re.compile(
    r"ACCESS_REFUSED - (?:(?P<perm>configure|write|read) )?access to (?P<kind>exchange|queue) "
    r"'(?P<name>[^']*)' in vhost '(?P<vhost>[^']*)' refused for user '(?P<user>[^']*)'"
)
#: What a permission is needed for, by what was refused.
_NEEDED = {
    "exchange": "configure to declare it, write to publish to it, read to bind a queue to it",
    "queue": "configure to declare or delete it, write to bind it, read to consume, get or purge",
}


def explain(error: BaseException | str, perm: str | None = None) -> str | None:
    """The one line for an access refused by the broker, or None when `error` is not one."""
    match = _REFUSED.search(str(error))
    if match is None:
        return None
    what, name = match["kind"], match["name"]
    perm = perm or match["perm"]
    lacks = f"{perm} permission" if perm else "a permission"
    return (
        f"RabbitMQ user '{match['user']}' lacks {lacks} on {what} '{name}' (vhost "
        f"'{match['vhost']}'; {_NEEDED[what]}): grant it with `rabbitmqctl set_permissions`, "
        f"see {DOCS}"
    )


def describe(error: BaseException) -> str:
    """`explain(error)`, else the error's repr: for log lines about broker sessions."""
    return explain(error) or repr(error)
