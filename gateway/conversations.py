"""Which conversation a message joins, and the open/resolved transitions.

Order of evidence: an explicit thread reference wins whatever the age of its
conversation (up to [conversations] max_reference_age, so a reply to a
years-old mail starts afresh); otherwise the contact's latest conversation
(across merged contacts) if its last activity is within the reopen window,
whatever the channel (a resolved one reopens); otherwise a new conversation
that links to the one before. Every transition is an event, so the stream
alone tells a backend when to open, reopen or close a ticket.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.errors import NotFound
from gateway.events import ConversationChange, Event, EventType
from gateway.ids import conversation_id as new_conversation_id
from gateway.store import ConversationRow, Tx


@dataclass(frozen=True, slots=True)
class ThreadRef:
    """An explicit thread reference: its kind scopes the value (an API thread, a Message-ID).

    The kind "ticket" names a conversation by its number (a token in a mail subject).
    """

    kind: str
    ref: str


TICKET = "ticket"


def ticket_pattern(token: str) -> re.Pattern[str]:
    """A regex finding the configured ticket token ("[#HL-{number}]") in a subject."""
    before, _, after = token.partition("{number}")
    return re.compile(re.escape(before) + r"(\d{1,12})" + re.escape(after))


def ticket_in(subject: str | None, token: str) -> ThreadRef | None:
    found = ticket_pattern(token).search(subject or "")
    return ThreadRef(TICKET, found.group(1)) if found else None


@dataclass(frozen=True, slots=True)
class Transition:
    conversation: ConversationRow
    changed: bool
    offset: int | None


def _change_event(
    kind: EventType, row: ConversationRow, source: str, now: float, reason: str | None = None
) -> Event:
    return Event.on_conversation(
        kind,
        conversation_id=row.id,
        contact_id=row.contact_id,
        source=source,
        at=now,
        data=ConversationChange(
            conversation_id=row.id,
            conversation_number=row.number,
            contact_id=row.contact_id,
            channel=row.channel,
            status=row.status,
            reason=reason,
            previous_conversation_id=row.previous_id,
        ),
    )


async def _reopen(tx: Tx, row: ConversationRow, source: str, now: float, reason: str) -> int:
    row.status = "open"
    row.resolved_at = None
    row.last_activity_at = now
    await tx.save_conversation(row)
    return await tx.append(_change_event(EventType.CONVERSATION_REOPENED, row, source, now, reason))


async def find_by_references(
    tx: Tx, lookups: Sequence[ThreadRef], now: float, max_age: float
) -> ConversationRow | None:
    """The conversation the first known reference names, if not older than `max_age`."""
    for ref in lookups:
        if ref.kind == TICKET:
            found = await tx.conversation_by_number(int(ref.ref))
        else:
            found = await tx.conversation_by_thread(ref.kind, ref.ref)
        if found is not None and now - found.last_activity_at <= max_age:
            return found
    return None


async def assign(
    tx: Tx,
    *,
    contact_id: str,
    channel: str,
    lookups: Sequence[ThreadRef],
    registers: Sequence[ThreadRef],
    now: float,
    reopen_window: float,
    max_reference_age: float,
    source: str,
    new_contact: bool = False,
) -> ConversationRow:
    """The conversation a new inbound message belongs to, opened or reopened as needed.

    `lookups` are explicit references in order of preference (the first known one wins);
    `registers` are the references this message makes known (an API thread, a Message-ID).
    """
    row = await find_by_references(tx, lookups, now, max_reference_age)
    latest = None
    if row is None and not new_contact:  # a contact made by this message has no past
        latest = await tx.latest_conversation(contact_id)
        if latest is not None and now - latest.last_activity_at <= reopen_window:
            row = latest
    if row is None:
        previous = latest.id if latest is not None else None
        row = await tx.create_conversation(
            new_conversation_id(), contact_id, channel, now, previous
        )
        await tx.append(_change_event(EventType.CONVERSATION_OPENED, row, source, now))
        for ref in registers:
            await tx.put_thread(ref.kind, ref.ref, row.id, now)
        return row  # created just now: nothing to touch
    if row.status == "resolved":
        await _reopen(tx, row, source, now, reason="customer wrote again")
    for ref in registers:
        await tx.put_thread(ref.kind, ref.ref, row.id, now)  # first use of a ref sticks
    row.last_activity_at = now
    if channel not in row.channels:
        row.channels.append(channel)
    await tx.save_conversation(row)
    return row


async def _load(tx: Tx, conversation_id: str) -> ConversationRow:
    row = await tx.get_conversation(conversation_id)
    if row is None:
        raise NotFound(f"no conversation {conversation_id!r}")
    return row


async def resolve(
    tx: Tx, conversation_id: str, *, source: str, now: float, reason: str | None
) -> Transition:
    row = await _load(tx, conversation_id)
    if row.status == "resolved":
        return Transition(row, changed=False, offset=None)
    row.status = "resolved"
    row.resolved_at = now
    await tx.save_conversation(row)
    offset = await tx.append(
        _change_event(EventType.CONVERSATION_RESOLVED, row, source, now, reason)
    )
    return Transition(row, changed=True, offset=offset)


async def reopen(
    tx: Tx, conversation_id: str, *, source: str, now: float, reason: str | None
) -> Transition:
    row = await _load(tx, conversation_id)
    if row.status == "open":
        return Transition(row, changed=False, offset=None)
    offset = await _reopen(tx, row, source, now, reason or "reopened by an agent")
    return Transition(row, changed=True, offset=offset)
