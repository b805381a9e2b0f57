"""Agent replies and internal notes, recorded as outbound events of their conversation.

Delivery to the customer is the channel connector's job (it reads the stream);
this records the reply durably first, so an agent's answer is never lost
between the helpdesk and the customer's channel. An automatic acknowledgement
is recorded the same way, as a bot's outbound event, so agents see what the
customer was told and no first-response clock takes it for an answer.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import orjson

from gateway.attachments import NewAttachment, store_attachments
from gateway.config import CoreConfig
from gateway.dedup import IdempotencyKey, recorded_answer, remember
from gateway.errors import NotFound
from gateway.events import Author, DeliveryFailed, Event, EventType, OutboundMessage
from gateway.ids import event_id
from gateway.store import FailingMark, Store, Tx

_ENHANCED = re.compile(r"\b5\.\d{1,3}\.\d{1,3}\b")  # an RFC 3463 permanent status


@dataclass(frozen=True, slots=True)
class Reply:
    conversation_id: str
    source: str
    text: str
    author: Author
    html: str | None = None
    internal: bool = False
    idempotency: IdempotencyKey | None = None
    # Files the agent attached (a reply made in a helpdesk), stored like a message's.
    attachments: tuple[NewAttachment, ...] = ()


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """An automatic acknowledgement a channel connector wants to send for a new conversation."""

    conversation_id: str
    address: str  # the customer's, normalized as a handle
    text: str
    source: str
    window: float  # at most one per address within this many seconds
    received_at: float  # when the message it acknowledges was accepted


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """The acknowledgement's event id, or why none was recorded."""

    event_id: str | None
    skipped: str | None = None


@dataclass(frozen=True, slots=True)
class ReplyAck:
    offset: int
    event_id: str
    conversation_id: str
    duplicate: bool = False

    def as_json(self) -> dict[str, object]:
        return asdict(self)


class Replies:
    def __init__(
        self, store: Store, config: CoreConfig, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self.config = config
        self._clock = clock

    async def add_reference(self, conversation_id: str, kind: str, ref: str) -> None:
        """Make a reference (the Message-ID of a mail sent) lead back to its conversation."""
        now = self._clock()

        async def unit(tx: Tx) -> None:
            await tx.put_thread(kind, ref, conversation_id, now)

        await self._store.write(unit)

    async def delivery_failed(
        self,
        reply_event_id: str,
        conversation_id: str,
        recipient: str | None,
        reason: str,
        source: str,
        *,
        address_failed: bool = False,
    ) -> int:
        """Record on the conversation that a reply will never reach the customer;
        `address_failed`: the relay refused the address itself (550 5.1.1 at RCPT), so it
        is marked failing like a bounce would mark it."""
        now = self._clock()

        async def unit(tx: Tx) -> int:
            row = await tx.get_conversation(conversation_id)
            if row is None:
                raise NotFound(f"no conversation {conversation_id!r}")
            failure = event_id()
            offset = await tx.append(
                Event.on_conversation(
                    EventType.MESSAGE_DELIVERY_FAILED,
                    conversation_id=row.id,
                    contact_id=row.contact_id,
                    source=source,
                    at=now,
                    event_id=failure,
                    data=DeliveryFailed(
                        channel=row.channel,
                        conversation_id=row.id,
                        conversation_number=row.number,
                        contact_id=row.contact_id,
                        reply_event_id=reply_event_id,
                        recipient=recipient,
                        reason=reason,
                    ),
                )
            )
            if address_failed and recipient:
                status = _ENHANCED.search(reason)
                mark = FailingMark(reason, status.group() if status else None, now, failure)
                await tx.mark_failing(recipient, mark, offset)
            return offset

        return await self._store.write(unit)

    async def acknowledge(self, ack: Acknowledgement) -> Acknowledged:
        """Record an automatic acknowledgement unless the address must not get one now.

        One transaction decides and records, so across crashes and restarts an address
        gets at most one within the window and a conversation at most one at all. None
        goes to an address marked failing, nor for a message older than the window.
        """

        async def unit(tx: Tx) -> Acknowledged:
            return await self._acknowledge(tx, ack)

        return await self._store.write(unit)

    async def _acknowledge(self, tx: Tx, ack: Acknowledgement) -> Acknowledged:
        now = self._clock()
        row = await tx.get_conversation(ack.conversation_id)
        if row is None:
            raise NotFound(f"no conversation {ack.conversation_id!r}")
        if now - ack.received_at > ack.window:
            return Acknowledged(None, "the message is older than the window")
        mark = await tx.failing(ack.address)
        if mark is not None:
            return Acknowledged(None, f"the address is failing: {mark.reason}")
        last = await tx.last_auto_ack(ack.address)
        if last is not None and last.conversation_id == row.id:
            return Acknowledged(None, "this conversation was acknowledged already")
        if last is not None and now - last.at < ack.window:
            return Acknowledged(None, "the address was acknowledged within the window")
        event = Event.on_conversation(
            EventType.MESSAGE_OUTBOUND,
            conversation_id=row.id,
            contact_id=row.contact_id,
            source=ack.source,
            at=now,
            data=OutboundMessage(
                channel=row.channel,
                conversation_id=row.id,
                conversation_number=row.number,
                contact_id=row.contact_id,
                text=ack.text,
                author=Author(kind="bot", name="auto-acknowledgement"),
                auto_ack=True,
            ),
        )
        await tx.append(event)
        await tx.put_auto_ack(ack.address, row.id, event.id, now)
        return Acknowledged(event.id)

    async def record(self, reply: Reply) -> ReplyAck:
        async def unit(tx: Tx) -> ReplyAck:
            return await self._record(tx, reply)

        return await self._store.write(unit)

    async def _record(self, tx: Tx, reply: Reply) -> ReplyAck:
        now = self._clock()
        answer = await recorded_answer(
            tx, reply.idempotency, self.config.ingest.idempotency_window, now
        )
        if answer is not None:
            data = orjson.loads(answer)
            return ReplyAck(data["offset"], data["event_id"], data["conversation_id"], True)
        row = await tx.get_conversation(reply.conversation_id)
        if row is None:
            raise NotFound(f"no conversation {reply.conversation_id!r}")
        reply_id = event_id()
        attachments = await store_attachments(
            tx, reply_id, reply.attachments, self.config.ingest, now
        )
        event = Event.on_conversation(
            EventType.MESSAGE_OUTBOUND,
            conversation_id=row.id,
            contact_id=row.contact_id,
            source=reply.source,
            at=now,
            event_id=reply_id,
            data=OutboundMessage(
                channel=row.channel,
                conversation_id=row.id,
                conversation_number=row.number,
                contact_id=row.contact_id,
                text=reply.text,
                html=reply.html,
                internal=reply.internal,
                author=reply.author,
                attachments=attachments,
            ),
        )
        offset = await tx.append(event)
        if not reply.internal:
            row.last_activity_at = now
            await tx.save_conversation(row)
        ack = ReplyAck(offset, event.id, row.id)
        await remember(tx, reply.idempotency, orjson.dumps(ack.as_json()), now)
        return ack
