"""The rows and records the store's contract speaks in, shared by every engine, with
their JSON form for the API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.times import rfc3339


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    digest: bytes
    response: bytes
    created_at: float


@dataclass(slots=True)
class ConversationRow:
    id: str
    number: int
    contact_id: str
    status: str  # "open" | "resolved"
    channel: str  # the channel that opened it
    channels: list[str]
    created_at: float
    last_activity_at: float
    resolved_at: float | None
    previous_id: str | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "number": self.number,
            "contact_id": self.contact_id,
            "status": self.status,
            "channel": self.channel,
            "channels": list(self.channels),
            "created_at": ts(self.created_at),
            "last_activity_at": ts(self.last_activity_at),
            "resolved_at": ts(self.resolved_at),
            "previous_id": self.previous_id,
        }


def ts(value: float | None) -> str | None:
    """An epoch timestamp from the store as the stream's RFC 3339 text."""
    return rfc3339(datetime.fromtimestamp(value, UTC)) if value is not None else None


@dataclass(frozen=True, slots=True)
class FailingMark:
    """An email address a delivery report called permanently failing, until mail from it
    arrives again: why, since when, and the automatic event that recorded the report."""

    reason: str
    status: str | None
    since: float
    event_id: str

    def as_json(self) -> dict[str, object]:
        return {
            "reason": self.reason,
            "status": self.status,
            "since": ts(self.since),
            "event_id": self.event_id,
        }


@dataclass(frozen=True, slots=True)
class HandleRecord:
    """A handle of a contact and its audit trail: which message linked it, on what evidence."""

    kind: str
    value: str
    contact_id: str
    linked_at: float
    cause_event_id: str | None
    verified: bool
    failing: FailingMark | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "value": self.value,
            "contact_id": self.contact_id,
            "linked_at": ts(self.linked_at),
            "cause_event_id": self.cause_event_id,
            "verified": self.verified,
            "failing": self.failing.as_json() if self.failing else None,
        }


@dataclass(frozen=True, slots=True)
class ContactRow:
    id: str
    name: str | None
    merged_into: str | None
    created_at: float
    handles: tuple[HandleRecord, ...]
    merged: tuple[str, ...] = ()  # contacts merged into this one
    erased_at: float | None = None

    def as_json(self, requested: str) -> dict[str, object]:
        return {
            "contact_id": self.id,
            "requested_id": requested,
            "name": self.name,
            "handles": [h.as_json() for h in self.handles],
            "merged_ids": list(self.merged),
            "created_at": ts(self.created_at),
            "erased_at": ts(self.erased_at),
        }


Handle = tuple[str, str]  # (kind, normalized value): ("email", "ann@example.com")


@dataclass(frozen=True, slots=True)
class RawMail:
    """A mail as it arrived, durable before its sender was answered."""

    id: int
    connector: str
    received_at: float
    mail_from: str | None
    recipients: tuple[str, ...]
    dedup_key: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class MailboxPosition:
    """How far an IMAP mailbox was read (`uid`) and flagged or moved (`marked_uid`)."""

    mailbox: str
    uidvalidity: int
    uid: int
    marked_uid: int


@dataclass(frozen=True, slots=True)
class AutoAck:
    """The latest automatic acknowledgement an address was sent."""

    conversation_id: str
    event_id: str
    at: float


@dataclass(slots=True)
class ClockRow:
    """One first-response clock: from a customer's first message (or call) to a human answer."""

    conversation_id: str
    conversation_number: int
    contact_id: str
    channel: str
    started_at: float
    target: float
    due_at: float
    state: str = "running"  # "running" | "met" | "cancelled"
    customer_at: float | None = None
    calendar: str | None = None
    breached_at: float | None = None
    stopped_at: float | None = None
    seconds: float | None = None
    business_seconds: float | None = None
    within_target: bool | None = None
    reply_event_id: str | None = None
    reply_channel: str | None = None
    rearm: bool = False  # resolved since it ended: the next customer message starts a new one
    start_event_id: str | None = None  # the message or call that started it
    id: int | None = None
