"""Phone calls into the stream: each step of a call (ringing, answered, missed) is an event.

A call is a contact like a message: its ringing step finds (or makes) the
caller's contact by phone number and the conversation it belongs to, and
registers the PBX's call id as a thread reference so its later steps land on
the same conversation. A step repeated by the PBX (webhooks retry) is one
event. The PBX connector calls this; so do tests and anything else that knows
about calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import orjson

from gateway.ack import Ack, clamp_sent_at
from gateway.config import CoreConfig
from gateway.contact_graph import UNVERIFIED, resolve_contact
from gateway.conversations import ThreadRef, assign, find_by_references
from gateway.dedup import IdempotencyKey, digest_of, recorded_answer, remember
from gateway.events import Event, EventType
from gateway.events_timing import CallCaller, CallEvent
from gateway.identity import Handles
from gateway.ids import event_id
from gateway.store import Tx

Phase = Literal["ringing", "answered", "missed"]
_TYPES = {
    "ringing": EventType.CALL_RINGING,
    "answered": EventType.CALL_ANSWERED,
    "missed": EventType.CALL_MISSED,
}


@dataclass(frozen=True, slots=True)
class CallStep:
    source: str
    call_id: str
    phase: Phase
    direction: Literal["inbound", "outbound"]
    phone: str  # the customer's number, E.164 (the caller, or the one called back)
    at: datetime  # the PBX's time of the step
    name: str | None = None
    answered_by: Literal["human", "ivr", "voicemail"] | None = None
    agent: str | None = None

    def idempotency(self) -> IdempotencyKey:
        # An IVR answers first, a human later: each answer is a step of its own.
        key = f"{self.call_id}:{self.phase}" + (f":{self.answered_by}" if self.answered_by else "")
        digest = digest_of(
            self.direction.encode(), self.phone.encode(), (self.agent or "").encode()
        )
        return IdempotencyKey("voice", key, digest, f"call step {key!r}")


async def record_call(tx: Tx, step: CallStep, config: CoreConfig, now: float) -> Ack:
    idem = step.idempotency()
    answer = await recorded_answer(tx, idem, config.ingest.idempotency_window, now)
    if answer is not None:
        return Ack.replayed(answer)
    new_event = event_id()
    ref = ThreadRef("call", step.call_id)
    conversations = config.conversations
    row = await find_by_references(tx, [ref], now, conversations.max_reference_age)
    if row is None:  # its first step: find the caller and the conversation, like a message
        resolved = await resolve_contact(
            tx,
            Handles(phone=step.phone),
            step.name,
            now,
            evidence=UNVERIFIED,
            cause_event=new_event,
            source=step.source,
        )
        row = await assign(
            tx,
            contact_id=resolved.contact_id,
            channel="voice",
            lookups=[ref],
            registers=[ref],
            now=now,
            reopen_window=conversations.reopen_window,
            max_reference_age=conversations.max_reference_age,
            source=step.source,
            new_contact=resolved.created,
        )
    accepted = datetime.fromtimestamp(now, UTC)
    event = Event.on_conversation(
        _TYPES[step.phase],
        conversation_id=row.id,
        contact_id=row.contact_id,
        source=step.source,
        at=now,
        event_id=new_event,
        data=CallEvent(
            conversation_id=row.id,
            conversation_number=row.number,
            contact_id=row.contact_id,
            call_id=step.call_id,
            direction=step.direction,
            caller=CallCaller(phone=step.phone, name=step.name),
            answered_by=step.answered_by,
            agent=step.agent,
            at=clamp_sent_at(step.at, accepted) or accepted,
            accepted_at=accepted,
        ),
    )
    offset = await tx.append(event)
    ack = Ack(offset, event.id, row.id, row.contact_id)
    await remember(tx, idem, orjson.dumps(ack.as_json()), now)
    return ack
