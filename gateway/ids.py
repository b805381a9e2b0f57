"""Sortable, unguessable identifiers (ULID layout) with a prefix that says what they name.

Time-ordered ids keep index inserts local and make logs readable; the random
part means an id never reveals how many conversations or contacts exist.
A message takes four ids, so encoding goes ten bits at a time through a
table of character pairs rather than a character loop, and ids made in the
same millisecond share their time characters.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # index: 10 bits
_MS_MASK = (1 << 48) - 1
_POOL_SIZE = 4000
_pool = b""
_taken = _POOL_SIZE
_head_ms = -1
_head = ""


def _random80() -> tuple[int, int]:
    """80 bits from the OS generator as two 40-bit halves, read in blocks: one syscall per
    400 ids. An offset into the block, not a slice off its front: that copied the rest."""
    global _pool, _taken  # noqa: PLW0603 - a process-wide buffer of random bytes
    if _taken >= _POOL_SIZE:
        _pool, _taken = os.urandom(_POOL_SIZE), 0
    at = _taken
    _taken += 10
    return int.from_bytes(_pool[at : at + 5], "big"), int.from_bytes(_pool[at + 5 : at + 10], "big")


def _time_part(ms: int) -> str:
    """The 10 characters of the time (48 bits after two zero bits); the last one is reused."""
    global _head_ms, _head
    if ms != _head_ms:
        _head_ms, _head = ms, "".join([_PAIRS[(ms >> s) & 1023] for s in (40, 30, 20, 10, 0)])
    return _head


def new_id(prefix: str, now_ms: int | None = None) -> str:
    ms = (time.time_ns() // 1_000_000 if now_ms is None else now_ms) & _MS_MASK
    a, b = _random80()
    p = _PAIRS
    return (
        f"{prefix}_{_time_part(ms)}{p[a >> 30]}{p[a >> 20 & 1023]}{p[a >> 10 & 1023]}"
        f"{p[a & 1023]}{p[b >> 30]}{p[b >> 20 & 1023]}{p[b >> 10 & 1023]}{p[b & 1023]}"
    )


def event_id() -> str:
    return new_id("evt")


def conversation_id() -> str:
    return new_id("conv")


def contact_id() -> str:
    return new_id("ct")
