"""Sortable, unguessable identifiers (ULID layout) with a prefix that says what they name.

Time-ordered ids keep index inserts local and make logs readable; the random
part means an id never reveals how many conversations or contacts exist.
A message takes three ids, so encoding goes ten bits at a time through a
table of character pairs rather than a character loop.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # index: 10 bits
_SHIFTS = tuple(range(120, -1, -10))  # 13 pairs = 26 characters = 130 bits
_MS_MASK = (1 << 48) - 1
_POOL_SIZE = 4096
_pool = b""


def _random80() -> int:
    """80 bits from the OS generator, read in blocks: one syscall per 409 ids, not per id."""
    global _pool  # noqa: PLW0603 - a process-wide buffer of random bytes
    if len(_pool) < 10:
        _pool = os.urandom(_POOL_SIZE)
    chunk, _pool = _pool[:10], _pool[10:]
    return int.from_bytes(chunk, "big")


def new_id(prefix: str, now_ms: int | None = None) -> str:
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    value = (ms & _MS_MASK) << 80 | _random80()
    return prefix + "_" + "".join([_PAIRS[(value >> s) & 1023] for s in _SHIFTS])


def event_id() -> str:
    return new_id("evt")


def conversation_id() -> str:
    return new_id("conv")


def contact_id() -> str:
    return new_id("ct")
