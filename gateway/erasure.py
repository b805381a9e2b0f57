"""Erasing a person, and retention: personal content leaves, tombstones stay.

helpline holds people's messages and handles, so a person can be erased on
request and old content expires by itself ([retention] message_content; the
mail as it arrived by [retention] raw_mail).
Either way the event keeps its place, id, type and time, so offsets,
counts and first-response figures stay whole, and `data.erased` says what
happened; only the personal content is removed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.errors import NotFound
from gateway.events import ContactErased, Event, EventType
from gateway.ids import event_id
from gateway.store import Tx

RETENTION_CURSOR = "retention"
RETENTION_BATCH = 500
RAW_MAIL_BATCH = 200  # rows with whole mails in them: a transaction stays short
_EXPIRING = frozenset({EventType.MESSAGE_INBOUND.value, EventType.MESSAGE_OUTBOUND.value})
_NO_SENDER = {"email": None, "phone": None, "name": None, "visitor_id": None}


def tombstone(body: bytes) -> bytes:
    """The stored event with its personal content removed."""
    envelope: dict[str, Any] = orjson.loads(body)
    data = envelope["data"]
    kind = envelope["type"]
    if kind == EventType.MESSAGE_INBOUND:
        data.update(
            subject=None,
            text="",
            attachments=[],
            quoted=None,
            html=None,
            external_id=None,
            thread=None,
            erased=True,
        )
        data["from"] = dict(_NO_SENDER)
    elif kind == EventType.MESSAGE_OUTBOUND:
        data.update(text="", html=None, erased=True)
    elif kind in (EventType.CALL_RINGING, EventType.CALL_ANSWERED, EventType.CALL_MISSED):
        data["from"] = {"phone": None, "name": None}
    elif kind in (EventType.CONTACT_MERGED, EventType.CONTACT_LINK_SUGGESTED):
        data["handles"] = []
    return orjson.dumps(envelope)


async def _erase(tx: Tx, seq: int, body: bytes) -> None:
    """Tombstone one event, and let go of attachments nothing else uses."""
    await tx.replace_event_body(seq, tombstone(body))
    await tx.drop_attachments_of(orjson.loads(body)["id"])


async def erase_contact(
    tx: Tx, contact_id: str, *, now: float, source: str, reason: str | None
) -> int:
    """Erase a person (the contact and everyone merged with it); returns the event's offset."""
    ids = await tx.contact_group_ids(contact_id)
    if not ids:
        raise NotFound(f"no contact {contact_id!r}")
    survivor = ids[0]
    erased = 0
    for seq, body in await tx.events_of_contacts(ids):
        await _erase(tx, seq, body)
        erased += 1
    await tx.erase_contacts(ids, now)
    event = Event(
        id=event_id(),
        type=EventType.CONTACT_ERASED,
        source=source,
        time=datetime.fromtimestamp(now, UTC),
        subject=survivor,
        contact_id=survivor,
        data=ContactErased(
            contact_id=survivor, erased_ids=ids, events_erased=erased, reason=reason
        ),
    )
    return await tx.append(event)


async def expire_content(
    write: Callable[[Callable[[Tx], Awaitable[tuple[int, bool]]]], Awaitable[tuple[int, bool]]],
    cutoff: float,
    now: float,
) -> int:
    """Tombstone message content older than `cutoff`, in bounded transactions; returns count."""
    total = 0
    while True:

        async def unit(tx: Tx) -> tuple[int, bool]:
            # Events are in commit order, so the walk stops at the first one new enough:
            # each sweep reads what it expires plus one batch, never the whole table.
            after = await tx.get_cursor(RETENTION_CURSOR) or 0
            rows = await tx.events_after(after, RETENTION_BATCH)
            expired, last = 0, after
            for seq, at, kind, erased, body in rows:
                if at >= cutoff:
                    break
                if kind in _EXPIRING and not erased:
                    await _erase(tx, seq, body)
                    expired += 1
                last = seq
            if last != after:
                await tx.set_cursor(RETENTION_CURSOR, last, now)
            more = len(rows) == RETENTION_BATCH and last == rows[-1][0]
            return expired, more

        expired, more = await write(unit)
        total += expired
        if not more:
            return total


async def expire_raw_mail(
    write: Callable[[Callable[[Tx], Awaitable[int]]], Awaitable[int]], cutoff: float
) -> int:
    """Delete raw mail that became an event before `cutoff`, in bounded transactions.

    Only finished mail goes: pending mail is still to be normalized and failed mail
    waits for an operator, so neither is ever removed by age.
    """
    total = 0
    while True:

        async def unit(tx: Tx) -> int:
            return await tx.expire_raw_mail(cutoff, RAW_MAIL_BATCH)

        removed = await write(unit)
        total += removed
        if removed < RAW_MAIL_BATCH:
            return total
