"""What the delivery engine and its sinks exchange: events, attempts, figures.

Apart from the engine so a backend module can name these without the engine's
machinery, and so each module keeps to one job.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson

from gateway.component import ComponentState
from gateway.events import with_offset
from gateway.store import Tx

Commit = Callable[[Tx], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event of the stream as a sink sees it: the CloudEvent parsed once."""

    offset: int
    id: str
    type: str
    source: str
    time: float
    conversation_id: str | None
    contact_id: str | None
    data: dict[str, Any]
    body: bytes  # the CloudEvent as JSON, with its offset

    @classmethod
    def parse(cls, offset: int, stored: bytes) -> StreamEvent:
        """From the envelope as the store holds it (without its offset)."""
        body = with_offset(offset, stored)
        event = orjson.loads(body)
        data = event.get("data") or {}
        # Only the data names a conversation: a contact event's subject is a contact id.
        conversation = data.get("conversation_id") if isinstance(data, dict) else None
        return cls(
            offset=offset,
            id=event["id"],
            type=event["type"],
            source=event.get("source", ""),
            time=datetime.fromisoformat(event["time"]).timestamp(),
            conversation_id=conversation or None,
            contact_id=data.get("contact_id") if isinstance(data, dict) else None,
            data=data if isinstance(data, dict) else {},
            body=body,
        )

    @property
    def lane(self) -> str:
        if self.conversation_id:
            return self.conversation_id
        return f"contact:{self.contact_id}" if self.contact_id else "-"


@dataclass(frozen=True, slots=True)
class Attempt:
    number: int
    # A previous attempt may have reached the backend (an ambiguous failure, or a crash
    # after it was sent): look before creating again.
    maybe_sent: bool


class Sink(Protocol):
    """What a backend gives the engine: which events it takes, and how one is delivered."""

    def wants(self, event: StreamEvent) -> bool: ...

    async def deliver(self, event: StreamEvent, attempt: Attempt) -> Commit | None:
        """Deliver or raise a DeliveryFailure; the returned writes commit with the finish."""
        ...


@dataclass
class DeliveryStats:
    """The engine's live figures, for /readyz, /metrics and `helpline backends`."""

    state: ComponentState = ComponentState.STARTING
    last_error: str | None = None
    low_water: int = 0
    frontier: int = 0
    queued: int = 0
    in_flight: int = 0
    delivered: int = 0
    retries: int = 0
    parked: int = 0
    adopted: int = 0
    reachable: bool | None = None  # None: not tried yet
    authenticated: bool | None = None
    oldest_pending_at: float | None = None

    def lag_events(self, head: int) -> int:
        """Events not finished yet: unread ones up to `head` (the stream's), and queued ones."""
        return max(0, head - self.frontier) + self.queued

    def counters(self, head: int, now: float) -> dict[str, int]:
        """What /readyz shows of a backend: its lag and whether its system answers,
        besides what it delivered; `head` is the stream's, `now` the engine's clock."""
        found = {
            "delivered": self.delivered,
            "retries": self.retries,
            "parked": self.parked,
            "queued": self.queued,
            "in_flight": self.in_flight,
            "lag_events": self.lag_events(head),
            "lag_seconds": (
                int(max(0.0, now - self.oldest_pending_at))
                if self.oldest_pending_at is not None
                else 0
            ),
        }
        for name in ("reachable", "authenticated"):
            known = getattr(self, name)
            if known is not None:
                found[name] = int(known)
        return found


@dataclass(slots=True)
class QueuedItem:
    event: StreamEvent
    replay: bool = False
