"""The create-once protocol's corners, with a scripted helpdesk and an in-memory map."""

from __future__ import annotations

from typing import Any

import orjson
import structlog

from gateway.delivery.engine import Attempt, StreamEvent
from gateway.delivery.failures import TemporaryFailure
from gateway.delivery.items import INBOUND, RESOLVED, Customer, Item
from gateway.delivery.tickets import TicketSink
from gateway.events import ConversationChange, Event, EventType, InboundMessage, Sender
from gateway.store.delivery import Ref

CONVERSATION = "conv_01TEST"


class Handle:
    """The slice of BackendHandle the sink uses; writes land at once (or at commit)."""

    def __init__(self) -> None:
        self.refs: dict[tuple[str, str], Ref] = {}

    async def ref(self, kind: str, local_id: str) -> Ref | None:
        return self.refs.get((kind, local_id))

    async def put_ref(self, ref: Ref) -> None:
        self.refs[(ref.kind, ref.local_id)] = ref

    def ref_commit(self, ref: Ref) -> Any:
        async def unit(tx: Any) -> None:
            self.refs[(ref.kind, ref.local_id)] = ref

        return unit

    async def customer(self, contact_id: str) -> Customer:
        return Customer(contact_id=contact_id)


class Desk:
    """A helpdesk holding ticket T-1 already (an earlier create whose answer was lost)."""

    def __init__(self, fail_adds: int = 0) -> None:
        self.fail_adds = fail_adds
        self.added: list[str] = []
        self.created = 0
        self.statuses: list[str] = []

    async def find_tickets(self, item: Item) -> list[str]:
        return ["T-1"]

    async def create_ticket(self, item: Item, customer: Customer) -> str:
        self.created += 1
        return f"T-{self.created + 1}"

    async def add(self, ticket_id: str, item: Item, customer: Customer) -> None:
        if self.fail_adds:
            self.fail_adds -= 1
            raise TemporaryFailure("HTTP 429", status=429)
        self.added.append(item.event_id)

    async def already_added(self, ticket_id: str, item: Item) -> bool:
        return item.event_id in self.added

    async def set_status(self, ticket_id: str, status: str) -> None:
        self.statuses.append(status)


def event(offset: int, kind: str, data: dict[str, Any]) -> StreamEvent:
    base = {
        "conversation_id": CONVERSATION,
        "conversation_number": 1,
        "contact_id": "ct_1",
        "channel": "api",
    }
    if kind == INBOUND:
        body: Any = InboundMessage.model_validate(
            {**base, "from": Sender(email="a@example.org"), "text": "Hi", **data}
        )
        kind_type = EventType.MESSAGE_INBOUND
    else:
        assert kind == RESOLVED
        body = ConversationChange(**base, status="resolved")
        kind_type = EventType.CONVERSATION_RESOLVED
    envelope = Event.on_conversation(
        kind_type,
        conversation_id=CONVERSATION,
        contact_id="ct_1",
        data=body,
        source="/api/main",
        at=1_800_000_000.0,
    ).envelope_json()
    return StreamEvent.parse(offset, envelope)


async def deliver(sink: TicketSink, ev: StreamEvent, number: int) -> Any:
    commit = await sink.deliver(ev, Attempt(number, maybe_sent=number > 1))
    if commit is not None:
        await commit(None)
    return commit


async def test_an_adopted_ticket_is_mapped_even_when_the_add_after_it_fails() -> None:
    handle, desk = Handle(), Desk(fail_adds=1)
    sink = TicketSink(desk, handle, structlog.get_logger())  # type: ignore[arg-type]
    # event A created T-1 but its answer was lost: the row is pending, made by A
    handle.refs[("ticket", CONVERSATION)] = Ref("ticket", CONVERSATION, None, "pending", "evt_A")
    second = event(2, INBOUND, {"accepted_at": "2027-01-15T08:00:00Z"})
    try:
        await deliver(sink, second, 1)
    except TemporaryFailure:
        pass  # the add after the adoption was throttled
    else:
        raise AssertionError("the scripted 429 did not happen")
    assert handle.refs[("ticket", CONVERSATION)].state == "created"
    assert handle.refs[("ticket", CONVERSATION)].remote_id == "T-1"
    await deliver(sink, second, 2)
    assert desk.added == [second.id] and desk.created == 0


async def test_a_status_change_never_creates_a_ticket() -> None:
    handle, desk = Handle(), Desk()
    sink = TicketSink(desk, handle, structlog.get_logger())  # type: ignore[arg-type]
    resolved = event(3, RESOLVED, {})
    assert await deliver(sink, resolved, 1) is None
    assert desk.created == 0 and desk.statuses == [] and handle.refs == {}


def test_events_parse_their_conversation_from_the_data_only() -> None:
    body = orjson.dumps(
        {
            "specversion": "1.0",
            "id": "evt_M",
            "source": "/core",
            "type": "helpline.contact.merged.v1",
            "time": "2027-01-15T08:00:00Z",
            "subject": "ct_1",
            "data": {"survivor_id": "ct_1", "merged_ids": ["ct_2"]},
        }
    )
    parsed = StreamEvent.parse(9, body)
    assert parsed.conversation_id is None  # the subject names a contact, not a conversation
