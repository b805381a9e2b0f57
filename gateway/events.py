"""The stream's contract: CloudEvents 1.0 envelopes with typed, versioned data.

Every backend and stream consumer reads these shapes (docs/stream.md), so
the catalogue only grows: a changed shape is a new `.vN` type, never an edit.
The envelope's `source` names the event's origin (`/api/TOKEN`,
`/connectors/NAME`, `/backends/NAME` or `/core`), which is how a backend
recognises, and skips, what it produced itself.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import orjson
from pydantic import Field

from gateway.config import Channel
from gateway.event_base import EventData, Timestamp
from gateway.events_timing import CallEvent, FirstResponseBreached, FirstResponseMet
from gateway.ids import event_id as new_event_id
from gateway.times import rfc3339


class EventType(enum.StrEnum):
    MESSAGE_INBOUND = "helpline.message.inbound.v1"
    MESSAGE_OUTBOUND = "helpline.message.outbound.v1"
    MESSAGE_AUTOMATIC = "helpline.message.automatic.v1"
    MESSAGE_DELIVERY_FAILED = "helpline.message.delivery_failed.v1"
    CONVERSATION_OPENED = "helpline.conversation.opened.v1"
    CONVERSATION_RESOLVED = "helpline.conversation.resolved.v1"
    CONVERSATION_REOPENED = "helpline.conversation.reopened.v1"
    CONTACT_MERGED = "helpline.contact.merged.v1"
    CONTACT_SPLIT = "helpline.contact.split.v1"
    CONTACT_LINK_SUGGESTED = "helpline.contact.link_suggested.v1"
    CONTACT_ERASED = "helpline.contact.erased.v1"
    CALL_RINGING = "helpline.call.ringing.v1"
    CALL_ANSWERED = "helpline.call.answered.v1"
    CALL_MISSED = "helpline.call.missed.v1"
    FIRST_RESPONSE_MET = "helpline.first_response.met.v1"
    FIRST_RESPONSE_BREACHED = "helpline.first_response.breached.v1"


class Sender(EventData):
    """The handles a message came with, normalized (email lower-cased, phone E.164)."""

    email: str | None = None
    phone: str | None = None
    name: str | None = None
    visitor_id: str | None = None


class Author(EventData):
    kind: Literal["human", "bot", "system"]
    name: str | None = None


class AttachmentData(EventData):
    """An attachment of a message; fetch its content at GET /v1/attachments/{id}."""

    id: str | None = Field(description="att_ + the SHA-256 of the content; null if not stored")
    filename: str | None
    content_type: str = Field(description="what the bytes are, where they prove it")
    declared_type: str = Field(description="what the sender declared")
    size: int
    inline: bool = False
    content_id: str | None = None
    stored: bool = True
    note: str | None = None


class InboundMessage(EventData):
    channel: Channel
    conversation_id: str
    conversation_number: int
    contact_id: str
    sender: Sender = Field(alias="from")
    subject: str | None = None
    text: str
    quoted: str | None = Field(
        default=None,
        description="email: the quoted history and signature below the new text, kept apart",
    )
    html: str | None = None
    external_id: str | None = None
    thread: str | None = None
    message_id: str | None = Field(
        default=None, description="email: the mail's Message-ID, without angle brackets"
    )
    recipients: list[str] = Field(
        default_factory=list, description="email: the support addresses it was sent to"
    )
    sender_auth: str | None = Field(
        default=None,
        description="email: a trusted MTA's verdict on the sender (dmarc=pass, dmarc=fail)",
    )
    attachments: list[AttachmentData] = Field(default_factory=list)
    duplicate_of: str | None = Field(
        default=None,
        description="an earlier event of the same contact with nearly the same text",
    )
    sent_at: Timestamp | None = Field(
        default=None,
        description="the customer's own send time: shown, never trusted; clamped to accepted_at",
    )
    accepted_at: Timestamp
    erased: bool = Field(
        default=False,
        description="content and handles were removed (erasure or retention); a tombstone",
    )


class OutboundMessage(EventData):
    channel: Channel
    conversation_id: str
    conversation_number: int
    contact_id: str
    text: str
    html: str | None = None
    internal: bool = False
    author: Author
    attachments: list[AttachmentData] = Field(
        default_factory=list, description="files the agent attached (fetch each by its id)"
    )
    auto_ack: bool = Field(
        default=False,
        description="an automatic acknowledgement of a new conversation (author kind bot), "
        "not an answer: it never stops a first-response clock",
    )
    erased: bool = Field(default=False, description="the text was removed; a tombstone")


class FailedRecipient(EventData):
    """A recipient a delivery status notification (RFC 3464) reports as not delivered."""

    address: str = Field(
        description="the address sent to (Original-Recipient, else Final-Recipient), normalized"
    )
    status: str | None = Field(
        default=None, description="the enhanced status code (RFC 3463), e.g. 5.1.1"
    )
    diagnostic: str | None = Field(
        default=None, description="the remote server's answer (Diagnostic-Code)"
    )
    permanent: bool = Field(
        default=True,
        description="a permanent failure (a 5.x.x status), not a give-up after temporary "
        "ones; an address of the conversation's contact is then marked failing",
    )


class AutomaticMessage(EventData):
    """Mail no human wrote (an auto-reply, a bounce) or from one of helpline's own addresses.

    Recorded on the conversation it refers to; it never opens one, never stops a
    first-response clock and never earns an automatic answer.
    """

    channel: Channel
    conversation_id: str
    conversation_number: int
    contact_id: str
    kind: Literal["auto_reply", "bounce", "own_address"]
    reason: str
    sender: Sender = Field(alias="from")
    subject: str | None = None
    message_id: str | None = None
    failed_recipients: list[FailedRecipient] = Field(
        default_factory=list,
        description="bounce: the recipients its delivery status report says were not "
        "delivered (empty when it has no readable RFC 3464 report)",
    )
    accepted_at: Timestamp


class DeliveryFailed(EventData):
    """A reply could not be delivered to the customer and will not be retried."""

    channel: Channel
    conversation_id: str
    conversation_number: int
    contact_id: str
    reply_event_id: str
    recipient: str | None
    reason: str


class ConversationChange(EventData):
    conversation_id: str
    conversation_number: int
    contact_id: str
    channel: Channel
    status: Literal["open", "resolved"]
    reason: str | None = None
    previous_conversation_id: str | None = Field(
        default=None, description="the contact's conversation before this one, if any"
    )


class HandleData(EventData):
    kind: Literal["email", "phone", "visitor"]
    value: str


class ContactMerged(EventData):
    """Two or more contacts are one person from now on; lookups find the survivor."""

    survivor_id: str
    merged_ids: list[str]
    evidence: str
    cause_event_id: str | None = None
    handles: list[HandleData] = Field(default_factory=list)


class ContactSplit(EventData):
    """An operator undid a merge: the contact stands on its own again."""

    contact_id: str
    from_contact_id: str
    reason: str | None = None


class ContactErased(EventData):
    """A person's data was erased on request: handles, names and message content are gone."""

    contact_id: str
    erased_ids: list[str]
    events_erased: int
    reason: str | None = None


class LinkSuggested(EventData):
    """A message claims handles of several contacts on evidence too weak to merge them."""

    contact_ids: list[str]
    handles: list[HandleData]
    cause_event_id: str
    reason: str


DATA_MODELS: dict[EventType, type[EventData]] = {
    EventType.MESSAGE_INBOUND: InboundMessage,
    EventType.MESSAGE_OUTBOUND: OutboundMessage,
    EventType.MESSAGE_AUTOMATIC: AutomaticMessage,
    EventType.MESSAGE_DELIVERY_FAILED: DeliveryFailed,
    EventType.CONVERSATION_OPENED: ConversationChange,
    EventType.CONVERSATION_RESOLVED: ConversationChange,
    EventType.CONVERSATION_REOPENED: ConversationChange,
    EventType.CONTACT_MERGED: ContactMerged,
    EventType.CONTACT_SPLIT: ContactSplit,
    EventType.CONTACT_LINK_SUGGESTED: LinkSuggested,
    EventType.CONTACT_ERASED: ContactErased,
    EventType.CALL_RINGING: CallEvent,
    EventType.CALL_ANSWERED: CallEvent,
    EventType.CALL_MISSED: CallEvent,
    EventType.FIRST_RESPONSE_MET: FirstResponseMet,
    EventType.FIRST_RESPONSE_BREACHED: FirstResponseBreached,
}


@dataclass(frozen=True, slots=True)
class Event:
    """One stream entry before it has an offset."""

    id: str
    type: EventType
    source: str
    time: datetime
    subject: str
    data: EventData
    conversation_id: str | None = None
    contact_id: str | None = None

    @classmethod
    def on_conversation(
        cls,
        kind: EventType,
        *,
        conversation_id: str,
        contact_id: str,
        data: EventData,
        source: str,
        at: float,
        event_id: str | None = None,
    ) -> Event:
        """An event of a conversation: its subject and the ids the store indexes it by."""
        return cls(
            id=event_id or new_event_id(),
            type=kind,
            source=source,
            time=datetime.fromtimestamp(at, UTC),
            subject=conversation_id,
            data=data,
            conversation_id=conversation_id,
            contact_id=contact_id,
        )

    def envelope_json(self) -> bytes:
        """The CloudEvent without `offset`; the store adds it when it is read back."""
        return orjson.dumps(
            {
                "specversion": "1.0",
                "id": self.id,
                "source": self.source,
                "type": self.type.value,
                "time": rfc3339(self.time),
                "subject": self.subject,
                "datacontenttype": "application/json",
                "data": orjson.Fragment(self.data.model_dump_json(by_alias=True)),
            }
        )


def with_offset(offset: int, envelope: bytes) -> bytes:
    """Splice the offset extension attribute into a stored envelope without re-parsing it."""
    return b'{"offset":' + str(offset).encode() + b"," + envelope[1:]


def now_utc() -> datetime:
    return datetime.now(UTC)
