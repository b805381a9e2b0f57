"""What a ticket system gets from each stream event: one of four kinds of item.

Helpdesks know customer messages, agent replies, internal notes and status
changes; every event type of the stream maps onto one of those (or none), so
each backend renders four shapes instead of the whole catalogue. Calls,
automatic mail and failed deliveries become notes: agents need to see them,
the customer must never get them back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from gateway.delivery.engine import StreamEvent

INBOUND = "helpline.message.inbound.v1"
OUTBOUND = "helpline.message.outbound.v1"
AUTOMATIC = "helpline.message.automatic.v1"
DELIVERY_FAILED = "helpline.message.delivery_failed.v1"
RESOLVED = "helpline.conversation.resolved.v1"
REOPENED = "helpline.conversation.reopened.v1"
CALLS = ("helpline.call.ringing.v1", "helpline.call.answered.v1", "helpline.call.missed.v1")
CONTACT_MERGED = "helpline.contact.merged.v1"

TICKET_TYPES = frozenset(
    (INBOUND, OUTBOUND, AUTOMATIC, DELIVERY_FAILED, RESOLVED, REOPENED, *CALLS)
)


class ItemKind(enum.StrEnum):
    CUSTOMER = "customer"  # the customer wrote: a public, customer-authored article
    AGENT = "agent"  # a public answer to the customer
    NOTE = "note"  # internal: never shown to the customer
    STATUS = "status"  # the conversation was resolved or reopened


@dataclass(frozen=True, slots=True)
class AttachmentRef:
    id: str
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True, slots=True)
class Customer:
    """Who the ticket is for: the handles helpline knows of the conversation's contact."""

    contact_id: str
    email: str | None = None
    phone: str | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.email or self.phone or self.contact_id


@dataclass(frozen=True, slots=True)
class Item:
    kind: ItemKind
    event_id: str
    offset: int
    conversation_id: str
    conversation_number: int
    channel: str
    at: float
    text: str = ""
    html: str | None = None
    subject: str | None = None
    author: str | None = None  # an agent's name, for agent items
    status: str | None = None  # "resolved" | "open", for status items
    customer: Customer | None = None  # set on customer items (the sender's handles)
    attachments: tuple[AttachmentRef, ...] = field(default_factory=tuple)

    @property
    def title(self) -> str:
        """A ticket title when this item opens the ticket."""
        if self.subject:
            return self.subject
        first = self.text.strip().splitlines()[0] if self.text.strip() else ""
        head = first[:80] + ("…" if len(first) > 80 else "")
        return head or f"{self.channel} conversation #{self.conversation_number}"


@dataclass(frozen=True, slots=True)
class Merge:
    """Contacts helpline now knows to be one person: the survivor and the ones merged in."""

    event_id: str
    survivor_id: str
    merged_ids: tuple[str, ...]


def merge_of(event: StreamEvent) -> Merge | None:
    if event.type != CONTACT_MERGED:
        return None
    data = event.data
    return Merge(event.id, str(data["survivor_id"]), tuple(data.get("merged_ids") or ()))


def item_of(event: StreamEvent) -> Item | None:
    """The item an event becomes for a ticket system, or None if it has no place there."""
    data = event.data
    if event.type not in TICKET_TYPES or not event.conversation_id:
        return None
    base: dict[str, Any] = {
        "event_id": event.id,
        "offset": event.offset,
        "conversation_id": event.conversation_id,
        "conversation_number": int(data.get("conversation_number", 0)),
        "channel": str(data.get("channel", "api")),
        "at": event.time,
    }
    if event.type == INBOUND:
        if data.get("erased"):
            return None
        sender = data.get("from") or {}
        return Item(
            ItemKind.CUSTOMER,
            text=data.get("text", ""),
            html=data.get("html"),
            subject=data.get("subject"),
            customer=Customer(
                contact_id=str(data.get("contact_id", "")),
                email=sender.get("email"),
                phone=sender.get("phone"),
                name=sender.get("name"),
            ),
            attachments=_attachments(data),
            **base,
        )
    if event.type == OUTBOUND:
        return _outbound(data, base)
    if event.type in (RESOLVED, REOPENED):
        status = "resolved" if event.type == RESOLVED else "open"
        return Item(ItemKind.STATUS, status=status, text=data.get("reason") or "", **base)
    return Item(ItemKind.NOTE, text=_note_text(event.type, data), **base)


def _outbound(data: dict[str, Any], base: dict[str, Any]) -> Item | None:
    if data.get("erased"):
        return None
    author = data.get("author") or {}
    text = data.get("text", "")
    if data.get("auto_ack"):
        return Item(
            ItemKind.NOTE, text=f"Automatic acknowledgement sent to the customer:\n\n{text}", **base
        )
    if data.get("internal") or author.get("kind") != "human":
        name = author.get("name")
        return Item(ItemKind.NOTE, text=text, html=data.get("html"), author=name, **base)
    return Item(
        ItemKind.AGENT,
        text=text,
        html=data.get("html"),
        author=author.get("name"),
        attachments=_attachments(data),
        **base,
    )


def _attachments(data: dict[str, Any]) -> tuple[AttachmentRef, ...]:
    found = []
    for att in data.get("attachments") or []:
        if att.get("id") and att.get("stored", True) and not att.get("inline"):
            found.append(
                AttachmentRef(
                    id=att["id"],
                    filename=att.get("filename") or "attachment",
                    content_type=att.get("content_type") or "application/octet-stream",
                    size=int(att.get("size", 0)),
                )
            )
    return tuple(found)


def _note_text(kind: str, data: dict[str, Any]) -> str:
    if kind == AUTOMATIC:
        sender = (data.get("from") or {}).get("email") or "?"
        failed = ", ".join(r["address"] for r in data.get("failed_recipients") or [])
        text = f"Automatic mail ({data.get('kind')}) from {sender}: {data.get('reason', '')}"
        return text + (f"\nNot delivered to: {failed}" if failed else "")
    if kind == DELIVERY_FAILED:
        to = data.get("recipient") or "the customer"
        return f"A reply could not be delivered to {to}: {data.get('reason', '')}"
    caller = data.get("from") or {}
    who = caller.get("name") or caller.get("phone") or "unknown number"
    if kind.endswith("ringing.v1"):
        return f"Call from {who} ringing ({data.get('direction', 'inbound')})."
    if kind.endswith("answered.v1"):
        by = data.get("agent") or data.get("answered_by") or "someone"
        return f"Call from {who} answered by {by}."
    return f"Missed call from {who}."
