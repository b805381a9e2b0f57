"""Recording automatic mail on the conversation it refers to; it never opens one.

An auto-reply or a bounce that names one of our conversations (by its
threading headers or a ticket token) becomes a `helpline.message.automatic.v1`
event there, so agents see that their answer bounced or that the customer is
away. One that names nothing is kept as it arrived (the raw record, marked
with why) and goes no further: it must not open a conversation or create a
contact, and helpline never answers it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import orjson

from gateway.config import Channel, CoreConfig
from gateway.conversations import ThreadRef, find_by_references
from gateway.dedup import IdempotencyKey, recorded_answer, remember
from gateway.events import AutomaticMessage, Event, EventType, Sender
from gateway.ids import event_id
from gateway.store import Tx


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
        event = Event(
            id=event_id(),
            type=EventType.MESSAGE_AUTOMATIC,
            source=item.source,
            time=accepted,
            subject=row.id,
            conversation_id=row.id,
            contact_id=row.contact_id,
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
                accepted_at=accepted,
            ),
        )
        await tx.append(event)
        recorded = event.id
    if item.raw_id is not None:
        note = None if row else f"{item.kind} ({item.reason}) naming no known conversation: kept"
        await tx.finish_raw_mail(item.raw_id, recorded, note)
    await remember(tx, item.idempotency, orjson.dumps({"event_id": recorded}), now)
    return recorded
