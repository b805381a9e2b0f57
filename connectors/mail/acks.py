"""Automatic acknowledgements: one mail telling a customer their new request was received.

Only a conversation that a customer's email opened gets one, from the support
address they wrote to, marked `Auto-Submitted: auto-replied` (RFC 3834) so that
well-behaved responders do not answer it. Mail that no human wrote never opens
a conversation (loops.py), so it is never acknowledged; nor is a message
claiming one of our own addresses, one that failed DMARC (an acknowledgement
would go to whoever's address was forged), or one an agent has answered by
the time it is seen. The core decides the rest in one transaction (a failing
address, one per address per window, durable across restarts): see
`gateway.replies.Replies.acknowledge`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from gateway.events import EventType
from gateway.replies import Acknowledgement

PLACEHOLDERS = ("ticket", "subject")
_REPLY_PREFIX = re.compile(r"^\s*((re|aw|sv|fwd?|wg)\s*:\s*)+", re.IGNORECASE)

DEFAULT_SUBJECT = "Re: {subject} {ticket}"
DEFAULT_TEXT = (
    "Thank you for writing to us. We have received your request and will answer it "
    "as soon as we can.\n\n"
    "Your reference is {ticket}. Please keep it in the subject if you write to us again.\n\n"
    "This message was sent automatically.\n"
)


def check_template(value: str, *, required: tuple[str, ...] = ()) -> str:
    """A template that formats with the known placeholders (and has the required ones)."""
    try:
        value.format(**{name: "x" for name in PLACEHOLDERS})
    except (KeyError, IndexError, ValueError) as err:
        known = ", ".join(f"{{{name}}}" for name in PLACEHOLDERS)
        raise ValueError(
            f"{value!r} is not a valid template ({err!r}): it may use {known}; "
            "write a literal brace as {{ or }}"
        ) from err
    for name in required:
        if f"{{{name}}}" not in value:
            raise ValueError(f"{value!r} must contain {{{name}}}")
    return value


def base_subject(subject: str | None, ticket: str) -> str:
    """The customer's subject without reply prefixes and without our ticket token."""
    return _REPLY_PREFIX.sub("", (subject or "Your request").replace(ticket, "")).strip()


def render(template: str, *, subject: str | None, ticket: str) -> str:
    return template.format(subject=base_subject(subject, ticket), ticket=ticket)


def _opened_by(events: list[dict[str, Any]], inbound_id: str) -> bool:
    """Whether the conversation was opened by this email (not joined or reopened by it)."""
    if not events or events[0]["type"] != EventType.CONVERSATION_OPENED:
        return False
    if events[0]["data"]["channel"] != "email":
        return False
    first = next((e for e in events if e["type"] == EventType.MESSAGE_INBOUND), None)
    return first is not None and first["id"] == inbound_id


def _answered(events: list[dict[str, Any]]) -> bool:
    return any(
        e["type"] == EventType.MESSAGE_OUTBOUND and not e["data"]["internal"] for e in events
    )


def acknowledgement_for(
    inbound: dict[str, Any],
    events: list[dict[str, Any]],
    *,
    own: set[str],
    text: str,
    window: float,
    source: str,
    ticket: str,
) -> tuple[Acknowledgement | None, str]:
    """What to acknowledge for an inbound email event, or None and why not.

    `events` are its conversation's, in order; `own` the addresses helpline sends from.
    """
    data = inbound["data"]
    address = (data["from"].get("email") or "").lower()
    if not _opened_by(events, inbound["id"]):
        return None, "not a new conversation"
    if not address or address in own or address in {r.lower() for r in data["recipients"]}:
        return None, "no customer address, or one of helpline's own"
    if data.get("sender_auth") == "dmarc=fail":
        return None, "the sender failed DMARC"
    if _answered(events):
        return None, "an agent answered already"
    received = datetime.fromisoformat(data["accepted_at"].replace("Z", "+00:00"))
    ack = Acknowledgement(
        conversation_id=data["conversation_id"],
        address=address,
        text=render(text, subject=data.get("subject"), ticket=ticket),
        source=source,
        window=window,
        received_at=received.timestamp(),
    )
    return ack, "new conversation"
