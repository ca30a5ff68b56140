"""The pika versions our patches of pika's internals were written for.

`pika_writes` (the relay's joined sends) and `amqp_properties` (the consumer's tolerant
properties) replace private pieces of pika. They are installed explicitly by the processes that
want them (`outbox_relay`, the workers of `cqrs_consume`), never on import, and each checks here
first that this pika is one they were written for: another one fails loudly at start instead of
misbehaving quietly. pyproject pins pika to the same range; moving the pin means reading the
patched pika code again and widening `SUPPORTED` with it (tests/test_pika_patches.py says so).
"""

from __future__ import annotations

import re

import pika

#: [lowest, next major): the pika versions the patches were read against.
SUPPORTED = ((1, 3), (2, 0))


class UnsupportedPika(RuntimeError):
    """This pika is not one a patch of its internals was written for."""


def version(text: str | None = None) -> tuple[int, int]:
    """(major, minor) of pika's version string (this pika's by default)."""
    text = pika.__version__ if text is None else text
    match = re.match(r"(\d+)\.(\d+)", text)
    if match is None:
        raise UnsupportedPika(f"cannot read pika's version {text!r}")
    return int(match[1]), int(match[2])


def require(patch: str, *attributes: tuple[object, str], text: str | None = None) -> None:
    """Raise UnsupportedPika unless this pika is in SUPPORTED and has every (owner, name)
    attribute the patch replaces or relies on."""
    low, high = SUPPORTED
    found = version(text)
    if not low <= found < high:
        raise UnsupportedPika(
            f"{patch} was written for pika >={low[0]}.{low[1]},<{high[0]}.{high[1]}; "
            f"this is pika {text or pika.__version__}: read the patch again before widening "
            "django_tools.pika_support.SUPPORTED"
        )
    for owner, name in attributes:
        if not hasattr(owner, name):
            owner_name = getattr(owner, "__name__", owner)
            raise UnsupportedPika(f"{patch}: pika has no {owner_name}.{name}")
