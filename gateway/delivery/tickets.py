"""One ticket per conversation, whatever happens to the requests that create it.

The create-once protocol (reference/backends.md §2.1), written once for every
helpdesk: before the first create of a conversation a `pending` row is
committed (the lock that survives restarts); a pending row found again means a
create may have happened, so the helpdesk is searched before creating anew; an
"already exists" answer is looked up and adopted; the ticket id is stored in
the same transaction that marks the event finished. Follow-ups use the
helpdesk's per-event marker after an ambiguous attempt, so a retry does not
post a comment twice. A helpdesk module only says how to find, create, add and
change a ticket (`TicketApi`).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Protocol, runtime_checkable

import structlog

from gateway.delivery.board import BackendHandle
from gateway.delivery.engine import Attempt, Commit, StreamEvent
from gateway.delivery.failures import AlreadyExists, TemporaryFailure
from gateway.delivery.items import (
    CONTACT_MERGED,
    Customer,
    Item,
    ItemKind,
    Merge,
    item_of,
    merge_of,
)
from gateway.store import Tx
from gateway.store.delivery import Ref

CACHED_TICKETS = 10_000


class TicketApi(Protocol):
    """What a helpdesk module implements; each call raises DeliveryFailures."""

    async def find_tickets(self, item: Item) -> list[str]:
        """The tickets carrying this item's conversation id, oldest first."""
        ...

    async def create_ticket(self, item: Item, customer: Customer) -> str:
        """A new ticket whose first message is `item`; its id."""
        ...

    async def add(self, ticket_id: str, item: Item, customer: Customer) -> None:
        """Append a customer message, an agent reply or an internal note."""
        ...

    async def already_added(self, ticket_id: str, item: Item) -> bool:
        """Whether the ticket holds this item already (by its helpline event id)."""
        ...

    async def set_status(self, ticket_id: str, status: str) -> None:
        """Follow a conversation resolved ("resolved") or reopened ("open")."""
        ...


@runtime_checkable
class MergesUsers(Protocol):
    """A TicketApi whose helpdesk can merge two of its users (end users, contacts)."""

    async def merge_users(self, source: str, target: str) -> None:
        """Fold the helpdesk user `source` into `target` (their tickets go along)."""
        ...


class TicketSink:
    """A Sink (engine.py) over a TicketApi: the engine calls `wants` and `deliver`."""

    def __init__(
        self, api: TicketApi, handle: BackendHandle, log: structlog.stdlib.BoundLogger
    ) -> None:
        self._api = api
        self._handle = handle
        self._log = log
        self._tickets: OrderedDict[str, Ref] = OrderedDict()  # recent ones; the store has all
        self.duplicates = 0  # conversations found with several tickets (made outside helpline)
        self.adopted = 0  # creates resolved by a lookup

    def wants(self, event: StreamEvent) -> bool:
        if event.type == CONTACT_MERGED:
            return isinstance(self._api, MergesUsers)
        return item_of(event) is not None

    async def ticket_of(self, conversation_id: str) -> Ref | None:
        ref = self._tickets.get(conversation_id)
        if ref is None:
            ref = await self._handle.ref("ticket", conversation_id)
            if ref is not None and ref.state == "created":
                self._remember(ref)
        return ref

    async def deliver(self, event: StreamEvent, attempt: Attempt) -> Commit | None:
        merge = merge_of(event)
        if merge is not None:
            await self._merge(merge)
            return None
        item = item_of(event)
        if item is None:
            return None
        ref = await self.ticket_of(item.conversation_id)
        if ref is not None and ref.state == "created" and ref.remote_id is not None:
            return await self._add(ref.remote_id, item, attempt)
        if item.kind is ItemKind.STATUS:
            # Never a ticket made for a status: only one that exists is resolved or reopened.
            found = await self._lookup(item) if ref is not None else None
            if found is None:
                return None
            await self._adopt(item.conversation_id, found, ref.event_id if ref else None)
            return await self._add(found, item, attempt)
        customer = await self._customer(item, event)
        fresh = ref is None
        if ref is None:
            ref = Ref("ticket", item.conversation_id, None, "pending", item.event_id)
            await self._handle.put_ref(ref)  # the lock, durable before anything is sent
        if not fresh:
            found = await self._lookup(item)
            if found is not None:
                if ref.event_id == item.event_id:  # this very event's create went through
                    return self._created(item.conversation_id, found, ref.event_id)
                # Another event's create went through: keep that before adding this one.
                await self._adopt(item.conversation_id, found, ref.event_id)
                return await self._add(found, item, attempt)
        try:
            ticket = await self._api.create_ticket(item, customer)
        except AlreadyExists:
            found = await self._lookup(item)
            if found is None:
                raise TemporaryFailure(
                    "the helpdesk says the ticket exists, but no lookup finds it yet"
                ) from None
            ticket = found
        return self._created(item.conversation_id, ticket, item.event_id)

    async def _lookup(self, item: Item) -> str | None:
        found = await self._api.find_tickets(item)
        if not found:
            return None
        self.adopted += 1
        if len(found) > 1:
            self.duplicates += 1
            self._log.warning(
                "backend.several_tickets",
                conversation_id=item.conversation_id,
                tickets=found,
                adopted=found[0],
                hint="the others were not made by this helpline; merge or close them by hand",
            )
        else:
            self._log.info(
                "backend.ticket_adopted", conversation_id=item.conversation_id, ticket=found[0]
            )
        return found[0]

    def _created(self, conversation_id: str, ticket: str, event_id: str | None) -> Commit:
        """The map row, written in the transaction that finishes the event; remembered
        here only once that transaction runs."""
        ref = Ref("ticket", conversation_id, ticket, "created", event_id)
        write = self._handle.ref_commit(ref)

        async def commit(tx: Tx) -> None:
            await write(tx)
            self._remember(ref)

        return commit

    async def _adopt(self, conversation_id: str, ticket: str, event_id: str | None) -> None:
        ref = Ref("ticket", conversation_id, ticket, "created", event_id)
        await self._handle.put_ref(ref)
        self._remember(ref)

    def _remember(self, ref: Ref) -> None:
        self._tickets[ref.local_id] = ref
        self._tickets.move_to_end(ref.local_id)
        while len(self._tickets) > CACHED_TICKETS:
            self._tickets.popitem(last=False)

    async def _add(self, ticket: str, item: Item, attempt: Attempt) -> Commit | None:
        if item.kind is ItemKind.STATUS:
            if item.status:
                await self._api.set_status(ticket, item.status)
            return None
        if attempt.maybe_sent and await self._api.already_added(ticket, item):
            return None
        customer = item.customer or Customer(contact_id="")
        with contextlib.suppress(AlreadyExists):  # the helpdesk holds it already: finished
            await self._api.add(ticket, item, customer)
        return None

    async def _merge(self, merge: Merge) -> None:
        """Merge the helpdesk users of contacts helpline merged; each step is kept in the
        user map at once, so a retry after a failure redoes only what is left."""
        if not isinstance(self._api, MergesUsers):
            return
        target = await self._handle.ref("user", merge.survivor_id)
        for merged in merge.merged_ids:
            source = await self._handle.ref("user", merged)
            if source is None or source.remote_id is None:
                continue
            if target is None or target.remote_id is None:
                # The survivor never reached this helpdesk: the merged one's user is theirs.
                target = Ref("user", merge.survivor_id, source.remote_id, "created")
                await self._handle.put_ref(target)
                continue
            if source.remote_id != target.remote_id:
                await self._api.merge_users(source.remote_id, target.remote_id)
                self._log.info(
                    "backend.users_merged",
                    contact_id=merged,
                    survivor_id=merge.survivor_id,
                    source=source.remote_id,
                    target=target.remote_id,
                )
            await self._handle.put_ref(Ref("user", merged, target.remote_id, "created"))

    async def _customer(self, item: Item, event: StreamEvent) -> Customer:
        if item.customer is not None:
            return item.customer
        contact_id = event.contact_id or ""
        return await self._handle.customer(contact_id)
