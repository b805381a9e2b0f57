"""The identity graph: which contact a message belongs to, and when contacts become one.

A message that carries several handles links them. Linking a handle nobody
has yet to a contact is always fine. Joining two contacts that both exist
already is a merge, and a merge needs verified evidence (a trusted API token;
later a DMARC-passing mail or a site-signed chat identity): anyone can type
anyone's address into a form, and a false merge shows one customer's history
to another. Unverified claims raise a link suggestion for a human, once per
pair, and the message goes to the contact of its most specific known handle.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.errors import NotFound
from gateway.event_base import EventData
from gateway.events import (
    ContactMerged,
    ContactSplit,
    Event,
    EventType,
    HandleData,
    LinkSuggested,
)
from gateway.identity import Handles
from gateway.ids import contact_id as new_contact_id
from gateway.ids import event_id
from gateway.store import Handle, Tx


@dataclass(frozen=True, slots=True)
class Evidence:
    """How far a message's claim to its handles can be believed."""

    verified: bool
    kind: str  # "trusted_api_token", "unverified", ...


UNVERIFIED = Evidence(False, "unverified")


@dataclass(frozen=True, slots=True)
class Resolution:
    contact_id: str
    created: bool  # made by this message: it has no history to look up


def _handle_data(handles: list[Handle]) -> list[HandleData]:
    return [HandleData(kind=kind, value=value) for kind, value in handles]


def contact_event(kind: EventType, subject: str, data: EventData, source: str, now: float) -> Event:
    return Event(
        id=event_id(),
        type=kind,
        source=source,
        time=datetime.fromtimestamp(now, UTC),
        subject=subject,
        contact_id=subject,
        data=data,
    )


async def resolve_contact(
    tx: Tx,
    handles: Handles,
    name: str | None,
    now: float,
    *,
    evidence: Evidence,
    cause_event: str,
    source: str,
) -> Resolution:
    """The contact a message belongs to: created, linked or merged as its evidence allows."""
    ordered = handles.ordered()
    known = await tx.contacts_for_handles(ordered)
    owners = list(dict.fromkeys(known[h] for h in ordered if h in known))
    if not owners:
        owner = new_contact_id()
        await tx.create_contact(owner, name, now)
        for handle in ordered:
            await tx.add_handle(owner, handle, now, cause_event, evidence.verified)
        return Resolution(owner, created=True)
    elif len(owners) == 1 or not evidence.verified:
        owner = owners[0]
    else:
        created = await tx.contacts_created(owners)
        owner = min(owners, key=lambda c: (created.get(c, now), c))
    for handle in ordered:
        if handle not in known:
            await tx.add_handle(owner, handle, now, cause_event, evidence.verified)
    others = [c for c in owners if c != owner]
    if not others:
        return Resolution(owner, created=False)
    if evidence.verified:
        for other in others:
            await tx.merge_contact(other, owner, cause_event, evidence.kind, now)
        data: EventData = ContactMerged(
            survivor_id=owner,
            merged_ids=others,
            evidence=evidence.kind,
            cause_event_id=cause_event,
            handles=_handle_data(await tx.group_handles(owner)),
        )
        await tx.append(contact_event(EventType.CONTACT_MERGED, owner, data, source, now))
        return Resolution(owner, created=False)
    fresh = [c for c in others if await tx.first_suggestion(owner, c, cause_event, now)]
    if fresh:
        data = LinkSuggested(
            contact_ids=[owner, *fresh],
            handles=_handle_data(ordered),
            cause_event_id=cause_event,
            reason="an unverified message names handles of contacts that both have history",
        )
        await tx.append(contact_event(EventType.CONTACT_LINK_SUGGESTED, owner, data, source, now))
    return Resolution(owner, created=False)


async def split_contact(
    tx: Tx, contact_id: str, *, now: float, source: str, reason: str | None
) -> int:
    """Undo the merge that joined `contact_id` into another contact; returns the event offset."""
    survivor = await tx.split_contact(contact_id, now)
    if survivor is None:
        raise NotFound(f"contact {contact_id!r} is not merged into another contact")
    data = ContactSplit(contact_id=contact_id, from_contact_id=survivor, reason=reason)
    return await tx.append(contact_event(EventType.CONTACT_SPLIT, contact_id, data, source, now))
