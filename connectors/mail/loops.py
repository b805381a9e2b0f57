"""Mail that no human wrote: auto-replies, bounces, and mail from helpline's own addresses.

None of it may open a conversation or earn an automatic answer, or two systems
answering each other would mail forever (two helpline instances included). It
is recorded as a system event on the conversation it refers to, when one can
be found. Mail that claims one of helpline's own support addresses as its
sender is flagged the same way: either a loop, or someone outside using our
name, and neither is a customer.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message
from typing import Literal

from connectors.mail.hooks import RecipientPolicy
from connectors.mail.parse import ParsedMail, header_fields

Kind = Literal["auto_reply", "bounce", "own_address"]

BOUNCE_SENDERS = ("mailer-daemon", "postmaster")
BULK_PRECEDENCE = ("bulk", "junk", "list", "auto_reply")
AUTO_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autorespond-Id")
# Out-of-office subjects of the common clients, for the ones that set no header.
OOO_SUBJECTS = (
    "out of office",
    "automatic reply",
    "auto reply",
    "autoreply",
    "auto-reply",
    "abwesenheitsnotiz",
    "automatische antwort",
    "réponse automatique",
    "respuesta automática",
    "risposta automatica",
    "afwezigheidsbericht",
    "automatisch antwoord",
)


@dataclass(frozen=True, slots=True)
class Automatic:
    kind: Kind
    reason: str


def classify(
    raw: bytes | Message, parsed: ParsedMail, mail_from: str | None, own: RecipientPolicy
) -> Automatic | None:
    """Why this mail is automatic (or from ourselves), or None for a customer's mail.
    ``raw``: the mail, or its `header_fields` when the caller has them already."""
    headers = header_fields(raw) if isinstance(raw, bytes) else raw
    content_type = str(headers.get("Content-Type") or "").lower()  # (8-bit: a Header)
    sender = (parsed.from_email or "").lower()
    if mail_from in ("", "<>"):
        return Automatic("bounce", "the envelope sender is empty (a delivery report)")
    if sender.partition("@")[0] in BOUNCE_SENDERS:
        return Automatic("bounce", f"sent by {sender}")
    if content_type.startswith("multipart/report"):
        return Automatic("bounce", "a multipart/report (delivery status)")
    if parsed.from_email and own.accepts(parsed.from_email):
        return Automatic("own_address", f"the sender {sender} is one of helpline's own addresses")
    auto = (parsed.auto_submitted or "").strip().lower()
    if auto and auto != "no":
        return Automatic("auto_reply", f"Auto-Submitted: {auto}")
    precedence = (parsed.precedence or "").strip().lower()
    if precedence in BULK_PRECEDENCE:
        return Automatic("auto_reply", f"Precedence: {precedence}")
    for name in AUTO_HEADERS:
        if headers.get(name) is not None:
            return Automatic("auto_reply", f"{name} header")
    subject = (parsed.subject or "").strip().lower()
    if subject.startswith(OOO_SUBJECTS):
        return Automatic("auto_reply", f"an out-of-office subject: {parsed.subject!r}")
    return None
