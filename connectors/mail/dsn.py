"""Delivery status notifications (RFC 3464): which recipients failed, and which mail it was.

A bounce that follows RFC 3464 is a multipart/report whose message/delivery-status
part holds one block of fields for the message and one per recipient
(`Final-Recipient`, `Original-Recipient`, `Action`, `Status`, `Diagnostic-Code`),
usually followed by the returned mail or its headers (message/rfc822,
text/rfc822-headers). From those headers comes the Message-ID helpline gave its
reply, which names the conversation even when the bounce's own headers name
nothing. Reading never raises: a report that cannot be read yields no recipients,
and the bounce is still recorded, only without marking anyone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email import policy
from email.message import Message
from email.parser import BytesParser, HeaderParser

from connectors.mail.dedup import normalize_msgid

__all__ = ["DeliveryReport", "RecipientReport", "read_report"]

STATUS_PARTS = ("message/delivery-status", "message/global-delivery-status")  # RFC 6533
ORIGINAL_PARTS = ("message/rfc822", "message/global")
ORIGINAL_HEADER_PARTS = ("text/rfc822-headers", "message/global-headers")
MAX_DIAGNOSTIC = 500
MAX_RECIPIENTS = 100  # a report on a mail to thousands need not fill the event

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_MSGIDS = re.compile(r"<([^<>\s]+)>")


@dataclass(frozen=True, slots=True)
class RecipientReport:
    """What the report says of one recipient, as written (the address not normalized)."""

    address: str  # Original-Recipient when given (what was sent to), else Final-Recipient
    action: str | None  # failed, delayed, delivered, relayed, expanded
    status: str | None  # the enhanced status code (RFC 3463), "5.1.1"
    diagnostic: str | None  # the remote server's answer, without its type ("smtp;")

    @property
    def failed(self) -> bool:
        """The mail was not delivered to this recipient and will not be retried."""
        if self.action is not None:
            return self.action == "failed"
        return self.status is not None and self.status.startswith("5")

    @property
    def permanent(self) -> bool:
        """Failed for good with a permanent status (5.x.x), not given up after 4.x.x retries:
        the address itself is what fails."""
        return self.failed and (self.status is None or self.status.startswith("5"))


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    recipients: list[RecipientReport] = field(default_factory=list)
    # The returned mail's Message-ID, then the ids it replied to, without brackets.
    original_ids: list[str] = field(default_factory=list)
    original_subject: str | None = None


def _text(value: object) -> str:
    """Text the email package read from 8-bit bytes (kept as surrogates) as UTF-8."""
    try:
        return str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return str(value).encode("utf-8", "replace").decode("utf-8")


def _clean(value: object) -> str:
    return " ".join(_text(value).split())


def _typed(value: str | None) -> str | None:
    """The value of an RFC 3464 typed field ("rfc822; ann@example.org") without its type."""
    if not value:
        return None
    kind, sep, rest = _clean(value).partition(";")
    text = (rest if sep else kind).strip()
    return text or None


def _address(value: str | None) -> str | None:
    text = _typed(value)
    if text is None:
        return None
    text = text.strip("<>").strip()
    return text if "@" in text and " " not in text else None


def _split(text: str) -> list[Message]:
    parser = HeaderParser(policy=policy.default)
    blocks = re.split(r"\n[ \t]*\n", _text(text).replace("\r\n", "\n"))
    return [parser.parsestr(block + "\n") for block in blocks if block.strip()]


def _blocks(part: Message) -> list[Message]:
    """The field blocks of a delivery-status part. The email package splits
    message/delivery-status into blocks itself; a type it does not know
    (message/global-delivery-status) comes as one "message" whose body holds the
    blocks after the first, and those are split here."""
    payload = part.get_payload()
    if not isinstance(payload, list):
        return _split(str(payload))
    found: list[Message] = []
    for block in payload:
        if isinstance(block, Message):
            found.append(block)
            rest = block.get_payload(decode=True)  # its bytes: 8-bit text stays intact
            if isinstance(rest, bytes) and rest.strip():
                found += _split(rest.decode("utf-8", "replace"))
    return found


def _recipient(block: Message) -> RecipientReport | None:
    address = _address(block.get("Original-Recipient")) or _address(block.get("Final-Recipient"))
    if address is None:
        return None
    action = _clean(block.get("Action") or "").lower().split(" ")[0] or None
    diagnostic = _typed(block.get("Diagnostic-Code"))
    found = _STATUS.search(str(block.get("Status") or "")) or _STATUS.search(diagnostic or "")
    return RecipientReport(
        address=address,
        action=action,
        status=".".join(found.groups()) if found else None,
        diagnostic=diagnostic[:MAX_DIAGNOSTIC] if diagnostic else None,
    )


def _original(part: Message) -> Message | None:
    """The returned mail, or its header block (parsed as a message by the email package
    when its type is message/*, left as text when it is text/rfc822-headers)."""
    inner = part.get_payload()
    if isinstance(inner, list):
        return inner[0] if inner and isinstance(inner[0], Message) else None
    raw = part.get_payload(decode=True)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""
    return HeaderParser(policy=policy.default).parsestr(text.replace("\r\n", "\n"))


def _ids(original: Message) -> list[str]:
    found = []
    for name in ("Message-ID", "In-Reply-To", "References"):
        value = str(original.get(name) or "")
        found += [normalize_msgid(f"<{i}>") for i in _MSGIDS.findall(value)]
    return [i for i in dict.fromkeys(found) if i]


def read_report(raw: bytes) -> DeliveryReport:
    """The recipients and the returned mail a bounce reports; empty when it is no RFC 3464
    report or cannot be read."""
    try:
        msg = BytesParser(policy=policy.default).parsebytes(raw)
        recipients: list[RecipientReport] = []
        ids: list[str] = []
        subject: str | None = None
        for part in msg.walk():
            ctype = part.get_content_type()
            if ctype in STATUS_PARTS:
                for block in _blocks(part):  # the per-message block names no recipient
                    report = _recipient(block)
                    if report is not None and len(recipients) < MAX_RECIPIENTS:
                        recipients.append(report)
            elif ctype in ORIGINAL_PARTS + ORIGINAL_HEADER_PARTS and not ids:
                original = _original(part)
                if original is not None:
                    ids = _ids(original)
                    subject = _clean(original.get("Subject") or "") or None
        return DeliveryReport(recipients, ids, subject)
    except Exception:  # noqa: BLE001 - a bounce is recorded even when its report is unreadable
        return DeliveryReport()
