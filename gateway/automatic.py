"""Recording automatic mail on the conversation it refers to; it never opens one.

An auto-reply or a bounce that names one of our conversations (by its
threading headers or a ticket token) becomes a `helpline.message.automatic.v1`
event there, so agents see that their answer bounced or that the customer is
away. One that names nothing is kept as it arrived (the raw record, marked
with why) and goes no further: it must not open a conversation or create a
contact, and helpline never answers it.

A bounce's permanently failed recipients mark those addresses failing, in the
same transaction as its event, but only addresses of that conversation's
contact: anyone can write a bounce, so one naming a conversation cannot mark
somebody else's address. Mail from the address later ends the mark.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import orjson

from gateway.config import Channel, CoreConfig
from gateway.conversations import ThreadRef, find_by_references
from gateway.dedup import IdempotencyKey, recorded_answer, remember
from gateway.events import AutomaticMessage, Event, EventType, FailedRecipient, Sender
from gateway.store import FailingMark, Tx


@dataclass(frozen=True, slots=True)
class AutomaticInbound:
    channel: Channel
    source: str
    kind: Literal["auto_reply", "bounce", "own_address"]
    reason: str
    sender: Sender
    lookups: tuple[ThreadRef, ...]
    subject: str | None = None
    message_id: str | None = None
    idempotency: IdempotencyKey | None = None
    raw_id: int | None = None
    failed_recipients: tuple[FailedRecipient, ...] = ()  # addresses already normalized


async def record_automatic(
    tx: Tx, item: AutomaticInbound, config: CoreConfig, now: float
) -> str | None:
    """The event id recorded on the referred conversation, or None when it names none."""
    answer = await recorded_answer(tx, item.idempotency, config.ingest.idempotency_window, now)
    if answer is not None:
        recorded: str | None = orjson.loads(answer)["event_id"]
        if item.raw_id is not None:
            await tx.finish_raw_mail(item.raw_id, recorded)
        return recorded
    row = await find_by_references(tx, item.lookups, now, config.conversations.max_reference_age)
    recorded = None
    if row is not None:
        accepted = datetime.fromtimestamp(now, UTC)
        event = Event.on_conversation(
            EventType.MESSAGE_AUTOMATIC,
            conversation_id=row.id,
            contact_id=row.contact_id,
            source=item.source,
            at=now,
            data=AutomaticMessage(
                channel=item.channel,
                conversation_id=row.id,
                conversation_number=row.number,
                contact_id=row.contact_id,
                kind=item.kind,
                reason=item.reason,
                sender=item.sender,
                subject=item.subject,
                message_id=item.message_id,
                failed_recipients=list(item.failed_recipients),
                accepted_at=accepted,
            ),
        )
        offset = await tx.append(event)
        await _mark_failing(
            tx, item.failed_recipients, row.contact_id, recorded=event.id, offset=offset, now=now
        )
        recorded = event.id
    if item.raw_id is not None:
        note = None if row else f"{item.kind} ({item.reason}) naming no known conversation: kept"
        await tx.finish_raw_mail(item.raw_id, recorded, note)
    await remember(tx, item.idempotency, orjson.dumps({"event_id": recorded}), now)
    return recorded


async def _mark_failing(
    tx: Tx,
    failed: tuple[FailedRecipient, ...],
    contact_id: str,
    *,
    recorded: str,
    offset: int,
    now: float,
) -> None:
    """Mark the permanently failed addresses that belong to the conversation's contact."""
    permanent = [r for r in failed if r.permanent]
    if not permanent:
        return
    group = await tx.contact_group_ids(contact_id)
    owners = await tx.contacts_for_handles([("email", r.address) for r in permanent])
    for report in permanent:
        if group and owners.get(("email", report.address)) == group[0]:
            reason = report.diagnostic or f"delivery failed permanently ({report.status})"
            mark = FailingMark(reason, report.status, now, recorded)
            await tx.mark_failing(report.address, mark, offset)
