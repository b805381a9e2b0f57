"""Sortable, unguessable identifiers (ULID layout) with a prefix that says what they name.

Time-ordered ids keep index inserts local and make logs readable; the random
part means an id never reveals how many conversations or contacts exist.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32


def new_id(prefix: str, now_ms: int | None = None) -> str:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms & ((1 << 48) - 1)) << 80 | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"


def event_id() -> str:
    return new_id("evt")


def conversation_id() -> str:
    return new_id("conv")


def contact_id() -> str:
    return new_id("ct")
