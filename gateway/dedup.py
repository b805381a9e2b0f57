"""Idempotency: a repeated delivery of the same source item returns the first answer.

Keys are scoped (per API token, per channel) and remembered for a bounded
window; within it the same key with the same body digest replays the stored
answer, and with another digest is a conflict the sender must hear about.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from gateway.errors import IdempotencyConflict
from gateway.store import Tx


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    scope: str
    key: str
    digest: bytes
    label: str = ""  # the key as its sender wrote it, for error messages


def digest_of(*parts: bytes) -> bytes:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(len(part).to_bytes(8, "big"))
        hasher.update(part)
    return hasher.digest()


async def recorded_answer(
    tx: Tx, idem: IdempotencyKey | None, window: float, now: float
) -> bytes | None:
    """The stored answer for a key seen within the window, or None if it is new."""
    if idem is None:
        return None
    record = await tx.get_idempotency(idem.scope, idem.key)
    if record is None or now - record.created_at > window:
        return None
    if record.digest != idem.digest:
        raise IdempotencyConflict(
            f"{idem.label or repr(idem.key)} was already used with a different body"
        )
    return record.response


async def remember(tx: Tx, idem: IdempotencyKey | None, answer: bytes, now: float) -> None:
    if idem is not None:
        await tx.put_idempotency(idem.scope, idem.key, idem.digest, answer, now)
