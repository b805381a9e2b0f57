"""Handles normalized before they are compared, and a first, cautious contact rule.

The rule here never merges two contacts: a message goes to the contact of its
most specific known handle, and handles nobody has yet are linked to it.
Handles that already belong to another contact are left where they are, so a
form where someone typed a stranger's address cannot join two people's
histories (DESIGN.md: no merge on weak evidence).
"""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers

from gateway.errors import InvalidInput
from gateway.ids import contact_id as new_contact_id
from gateway.store import Handle, Tx

MAX_HANDLE_LENGTH = 254
WITHHELD = frozenset({"anonymous", "unknown", "<unknown>", "restricted", "withheld", "private"})


def normalize_email(raw: str, field: str = "email") -> str:
    value = raw.strip()
    local, at, domain = value.rpartition("@")
    if (
        not at
        or not local
        or not domain
        or "@" in local.strip('"')
        or any(ch.isspace() for ch in value)
        or "." not in domain
        or domain.startswith(".")
        or domain.endswith(".")
    ):
        raise InvalidInput(field, f"{raw!r} is not an email address")
    if len(value) > MAX_HANDLE_LENGTH:
        raise InvalidInput(field, f"longer than {MAX_HANDLE_LENGTH} characters")
    return value.lower()


def normalize_phone(raw: str, default_region: str | None, field: str = "phone") -> str:
    text = raw.strip()
    if text.lower() in WITHHELD or not text:
        raise InvalidInput(field, f"{raw!r} is a withheld caller id, not a phone number")
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as err:
        hint = "" if default_region else " (no [identity] default_region is set, so write +CC…)"
        raise InvalidInput(field, f"{raw!r} is not a phone number{hint}") from err
    if not phonenumbers.is_possible_number(number):
        raise InvalidInput(field, f"{raw!r} has the wrong number of digits for its country")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def normalize_visitor(raw: str, field: str = "visitor_id") -> str:
    value = raw.strip()
    if not value or len(value) > 200 or not value.isprintable():
        raise InvalidInput(field, "a visitor id is 1 to 200 printable characters")
    return value


@dataclass(frozen=True, slots=True)
class Handles:
    """A message's normalized handles, most specific first."""

    email: str | None = None
    phone: str | None = None
    visitor_id: str | None = None

    def ordered(self) -> list[Handle]:
        found: list[Handle] = []
        if self.email:
            found.append(("email", self.email))
        if self.phone:
            found.append(("phone", self.phone))
        if self.visitor_id:
            found.append(("visitor", self.visitor_id))
        return found


async def resolve_contact(tx: Tx, handles: Handles, name: str | None, now: float) -> str:
    """The contact a message belongs to, created if none of its handles is known."""
    ordered = handles.ordered()
    known = await tx.contacts_for_handles(ordered)
    owner = next((known[h] for h in ordered if h in known), None)
    if owner is None:
        owner = new_contact_id()
        await tx.create_contact(owner, name, now)
    for handle in ordered:
        if handle not in known:
            await tx.add_handle(owner, handle, now)
    return owner
