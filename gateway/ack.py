"""What an inbound item earns once committed: its offset, event, conversation and contact.

A connector answers its peer with it (HTTP 201, SMTP 250 after normalization),
and a repeated delivery gets the recorded one back with `duplicate` set.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import orjson


@dataclass(frozen=True, slots=True)
class Ack:
    offset: int
    event_id: str
    conversation_id: str
    contact_id: str
    duplicate: bool = False

    def as_json(self) -> dict[str, object]:
        # A literal, not dataclasses.asdict: this runs twice per message (~25 µs saved).
        return {
            "offset": self.offset,
            "event_id": self.event_id,
            "conversation_id": self.conversation_id,
            "contact_id": self.contact_id,
            "duplicate": self.duplicate,
        }

    @classmethod
    def replayed(cls, answer: bytes) -> Ack:
        data = orjson.loads(answer)
        return cls(
            offset=data["offset"],
            event_id=data["event_id"],
            conversation_id=data["conversation_id"],
            contact_id=data["contact_id"],
            duplicate=True,
        )


def clamp_sent_at(sent_at: datetime | None, accepted: datetime) -> datetime | None:
    """A sender's own clock is shown, never trusted: never later than our accept time."""
    if sent_at is None:
        return None
    if sent_at.tzinfo is None:
        sent_at = sent_at.replace(tzinfo=UTC)
    return min(sent_at, accepted).astimezone(UTC)
