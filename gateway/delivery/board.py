"""The daemon's view of its backends: engines it runs, and their state in the store.

Backends get their engine and their slice of the store through this, so a
backend module never touches the store; the HTTP API and the CLI read lag and
dead letters here, from the live engine when the backend runs and from the
store when it does not (a stopped backend's backlog is still a backlog).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from gateway.delivery.engine import DeliveryEngine, Sink, StreamEvent
from gateway.delivery.items import Customer
from gateway.delivery.settings import DeliverySection
from gateway.errors import NotFound
from gateway.store import Store, Tx
from gateway.store.delivery import DeadLetter, Ref, RefKind
from gateway.store.records import ts
from gateway.stream import StreamReader

# A create tried longer ago than this with no answer yet is not what a webhook is about.
UNANSWERED_FOR = 3600.0


@dataclass(frozen=True, slots=True)
class BackendView:
    """One backend as `GET /v1/backends` shows it."""

    name: str
    type: str
    running: bool
    state: str
    last_error: str | None
    lag_events: int
    lag_seconds: float
    queued: int
    in_flight: int
    delivered: int
    retries: int
    dead_letters: int
    low_water: int
    extra: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        body = {
            "name": self.name,
            "type": self.type,
            "running": self.running,
            "state": self.state,
            "last_error": self.last_error,
            "lag_events": self.lag_events,
            "lag_seconds": round(self.lag_seconds, 3),
            "queued": self.queued,
            "in_flight": self.in_flight,
            "delivered": self.delivered,
            "retries": self.retries,
            "dead_letters": self.dead_letters,
            "low_water": self.low_water,
        }
        body.update(self.extra)
        return body


def letter_json(letter: DeadLetter) -> dict[str, Any]:
    return {
        "backend": letter.backend,
        "offset": letter.offset,
        "event_id": letter.event_id,
        "type": letter.type,
        "conversation_id": letter.conversation_id,
        "status": letter.status,
        "error": letter.error,
        "attempts": letter.attempts,
        "parked_at": ts(letter.parked_at),
        "replay_requested": letter.replay_requested is not None,
    }


class BackendHandle:
    """What one backend component may do with the core: its engine, its ticket map, its
    small durable values. Built by the board, handed to the component at start."""

    def __init__(self, board: DeliveryBoard, name: str, type_name: str) -> None:
        self._board = board
        self.name = name
        self.type = type_name

    def engine(
        self, sink: Sink, settings: DeliverySection, log: structlog.stdlib.BoundLogger
    ) -> DeliveryEngine:
        engine = DeliveryEngine(
            self.name,
            sink,
            settings,
            self._board.store,
            self._board.stream,
            log=log,
            clock=self._board.clock,
        )
        self._board.attach(self.name, self.type, engine)
        return engine

    def detach(self) -> None:
        self._board.detach(self.name)

    async def ref(self, kind: RefKind, local_id: str) -> Ref | None:
        return await self._board.store.delivery.ref(self.name, kind, local_id)

    async def ref_by_remote(self, kind: RefKind, remote_id: str) -> Ref | None:
        return await self._board.store.delivery.ref_by_remote(self.name, kind, remote_id)

    async def put_ref(self, ref: Ref) -> None:
        now = self._board.clock()

        async def unit(tx: Tx) -> None:
            await tx.put_ref(self.name, ref, now)

        await self._board.store.write(unit)

    def ref_commit(self, ref: Ref) -> Callable[[Tx], Any]:
        """The same write, to run inside the transaction that finishes an event."""
        now = self._board.clock()

        async def unit(tx: Tx) -> None:
            await tx.put_ref(self.name, ref, now)

        return unit

    async def state(self, key: str) -> str | None:
        return await self._board.store.delivery.backend_state(self.name, key)

    async def put_state(self, key: str, value: str) -> None:
        now = self._board.clock()

        async def unit(tx: Tx) -> None:
            await tx.put_backend_state(self.name, key, value, now)

        await self._board.store.write(unit)

    async def attachment(self, attachment_id: str) -> tuple[str, bytes] | None:
        """An attachment's content type and bytes, by its `att_<sha256>` id."""
        sha = attachment_id.removeprefix("att_")
        return await self._board.store.get_attachment(sha)

    async def conversation_events(self, conversation_id: str) -> list[bytes]:
        return await self._board.stream.conversation(conversation_id)

    async def customer(self, contact_id: str) -> Customer:
        """The contact's handles as a ticket requester (the first email and phone it has)."""
        contact = await self._board.store.get_contact(contact_id) if contact_id else None
        if contact is None:
            return Customer(contact_id=contact_id)
        email = next((h.value for h in contact.handles if h.kind == "email"), None)
        phone = next((h.value for h in contact.handles if h.kind == "phone"), None)
        return Customer(contact_id=contact.id, email=email, phone=phone, name=contact.name)

    async def conversation_of_ticket(self, ticket_id: str) -> str | None:
        """The conversation a helpdesk's ticket stands for (an agent's reply came on it)."""
        ref = await self.ref_by_remote("ticket", ticket_id)
        return ref.local_id if ref is not None else None

    async def creates_unanswered(self) -> bool:
        """Whether some ticket create still waits for its answer: a webhook about a ticket
        helpline does not know yet may be about that one (ask the sender to retry)."""
        since = self._board.clock() - UNANSWERED_FOR
        return await self._board.store.delivery.pending_refs(self.name, "ticket", since) > 0


class DeliveryBoard:
    def __init__(
        self, store: Store, stream: StreamReader, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.stream = stream
        self.clock = clock
        self._engines: dict[str, tuple[str, DeliveryEngine]] = {}
        self.configured: dict[str, str] = {}  # name -> type, from the config

    def handle(self, name: str, type_name: str) -> BackendHandle:
        return BackendHandle(self, name, type_name)

    def attach(self, name: str, type_name: str, engine: DeliveryEngine) -> None:
        self._engines[name] = (type_name, engine)

    def detach(self, name: str) -> None:
        self._engines.pop(name, None)

    def engine(self, name: str) -> DeliveryEngine | None:
        held = self._engines.get(name)
        return held[1] if held else None

    def names(self) -> list[str]:
        return sorted(set(self.configured) | set(self._engines))

    def _known(self, name: str) -> None:
        if name not in self.configured and name not in self._engines:
            raise NotFound(f"no backend {name!r} (configured: {', '.join(self.names()) or 'none'})")

    async def view(self, name: str, extra: dict[str, Any] | None = None) -> BackendView:
        self._known(name)
        head = self.stream.head
        now = self.clock()
        letters = await self.store.delivery.dead_letter_count(name)
        held = self._engines.get(name)
        if held is not None:
            type_name, engine = held
            stats = engine.stats
            behind = stats.lag_events(head)
            oldest = stats.oldest_pending_at
            if oldest is None and head > stats.frontier:
                oldest = await self._event_time(stats.frontier + 1)
            health = {"reachable": stats.reachable, "authenticated": stats.authenticated}
            return BackendView(
                name=name,
                type=type_name,
                running=True,
                state=stats.state.label,
                last_error=stats.last_error,
                lag_events=behind,
                lag_seconds=max(0.0, now - oldest) if oldest is not None else 0.0,
                queued=stats.queued,
                in_flight=stats.in_flight,
                delivered=stats.delivered,
                retries=stats.retries,
                dead_letters=letters,
                low_water=stats.low_water,
                extra={**health, **(extra or {})},
            )
        position = await self.store.delivery.position(name)
        low = position.low_water if position else head
        done = len(position.done) if position else 0
        oldest = await self._event_time(low + 1) if head > low else None
        return BackendView(
            name=name,
            type=self.configured.get(name, "?"),
            running=False,
            state="stopped",
            last_error=None,
            lag_events=max(0, head - low - done),
            lag_seconds=max(0.0, now - oldest) if oldest is not None else 0.0,
            queued=0,
            in_flight=0,
            delivered=0,
            retries=0,
            dead_letters=letters,
            low_water=low,
            extra=extra or {},
        )

    async def _event_time(self, offset: int) -> float | None:
        rows = await self.store.read_stream(offset - 1, 1)
        if not rows:
            return None
        return StreamEvent.parse(offset, rows[0][1]).time

    async def dead_letters(
        self, name: str | None, conversation_id: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        if name is not None:
            self._known(name)
        return await self.store.delivery.dead_letters(
            name, conversation_id=conversation_id, limit=limit
        )

    async def dead_letter(self, name: str, offset: int) -> tuple[DeadLetter, bytes | None]:
        self._known(name)
        letter = await self.store.delivery.dead_letter(name, offset)
        if letter is None:
            raise NotFound(f"backend {name!r} has no dead letter at offset {offset}")
        return letter, await self.store.delivery.event_at(offset)

    async def replay(self, name: str, offset: int | None) -> int:
        """Ask for one dead letter (None: all of the backend's) to be delivered again."""
        self._known(name)
        if offset is not None:
            await self.dead_letter(name, offset)
        now = self.clock()

        async def unit(tx: Tx) -> int:
            return await tx.request_replay(name, offset, now)

        count = await self.store.write(unit)
        engine = self.engine(name)
        if engine is not None:
            engine.poke()
        return count

    async def drop(self, name: str, offset: int) -> None:
        await self.dead_letter(name, offset)

        async def unit(tx: Tx) -> bool:
            return await tx.unpark(name, offset)

        await self.store.write(unit)
