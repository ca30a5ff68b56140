"""PostgreSQL advisory-lock keys: a name → a signed 64-bit key, the same in every process."""

from __future__ import annotations

import hashlib


def advisory_key(name: str) -> int:
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
