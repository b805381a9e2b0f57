"""The store's side of ticket backends: positions, the ticket map, dead letters.

Kept apart from the rest of the store contract because only the delivery
engine and the backends API use it. A backend's rows are its own: two
backends never share a position, a ticket map or a dead letter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

RefKind = Literal["ticket", "user"]
RefState = Literal["pending", "created"]


@dataclass(frozen=True, slots=True)
class Position:
    """Where a backend stands: everything at or below `low_water` is finished, and so is
    each offset in `done`; nothing above `dispatched` was ever sent."""

    low_water: int
    dispatched: int
    done: frozenset[int]


@dataclass(frozen=True, slots=True)
class Ref:
    """A local id (conversation, contact) and the backend's id for it.

    `pending` means a create was (or is about to be) sent and its answer is not
    known: the next attempt looks the item up before creating again.
    """

    kind: RefKind
    local_id: str
    remote_id: str | None
    state: RefState
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One event a backend refused for good, kept until an operator replays or drops it."""

    backend: str
    offset: int
    event_id: str
    type: str
    conversation_id: str | None
    status: int | None
    error: str
    attempts: int
    parked_at: float
    replay_requested: float | None = None


class DeliveryTx(Protocol):
    """The writes of the delivery engine, inside one grouped transaction."""

    async def init_position(self, backend: str, low_water: int, now: float) -> None:
        """Create the backend's position unless it has one (a restart keeps the old one)."""
        ...

    async def finish_event(self, backend: str, offset: int, low_water: int, now: float) -> None:
        """Record `offset` finished and move the low-water mark up to `low_water`."""
        ...

    async def set_dispatched(self, backend: str, offset: int, now: float) -> None: ...

    async def put_ref(self, backend: str, ref: Ref, now: float) -> None: ...

    async def park(self, letter: DeadLetter) -> None: ...

    async def unpark(self, backend: str, offset: int) -> bool: ...

    async def request_replay(self, backend: str, offset: int | None, now: float) -> int:
        """Ask for one dead letter (or, with None, every one) to be delivered again."""
        ...

    async def put_backend_state(self, backend: str, key: str, value: str, now: float) -> None: ...

    async def put_delivered(self, event_id: str, backend: str, now: float) -> None:
        """When a backend delivered an event that can start a first-response clock."""
        ...

    async def forget_delivered(self, before: float) -> int: ...


class DeliveryReads(Protocol):
    """The committed state, read without waiting for the writer."""

    async def position(self, backend: str) -> Position | None: ...

    async def ref(self, backend: str, kind: RefKind, local_id: str) -> Ref | None: ...

    async def ref_by_remote(self, backend: str, kind: RefKind, remote_id: str) -> Ref | None: ...

    async def pending_refs(self, backend: str, kind: RefKind, since: float) -> int:
        """How many creates of this backend, tried since `since`, have no known answer
        yet (a create parked as a dead letter is not waiting for one)."""
        ...

    async def dead_letters(
        self, backend: str | None, *, conversation_id: str | None = None, limit: int = 100
    ) -> list[DeadLetter]: ...

    async def dead_letter(self, backend: str, offset: int) -> DeadLetter | None: ...

    async def replays_requested(self, backend: str, limit: int) -> list[DeadLetter]: ...

    async def dead_letter_count(self, backend: str) -> int: ...

    async def backend_state(self, backend: str, key: str) -> str | None: ...

    async def event_at(self, offset: int) -> bytes | None: ...
