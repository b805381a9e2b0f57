"""Parse a raw mail into the fields ingest needs, leniently: broken MIME never raises.

Uses the stdlib ``email`` package with ``policy.default``. Text is decoded with its
declared charset unless that is unknown or a lie (bytes not valid in it), in which
case UTF-8 and then charset-normalizer's detection decide; an HTML-only body is
turned into text with html-text. Whatever had to be repaired is listed in
``ParsedMail.defects``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import Message
from email.parser import BytesParser
from email.utils import parsedate_to_datetime

import html_text

from connectors.mail.charsets import clean, decode_text, decode_words
from connectors.mail.dedup import message_id_of, normalize_msgid, split_message

__all__ = ["AttachmentInfo", "ParsedMail", "parse_mail"]


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    filename: str | None
    content_type: str  # as declared, lower-cased
    size: int  # decoded bytes
    content_id: str | None  # without angle brackets
    inline: bool
    data: bytes = field(default=b"", repr=False)  # the decoded content


@dataclass(frozen=True, slots=True)
class ParsedMail:
    message_id: str | None
    from_email: str | None
    from_name: str | None
    to: list[str]
    cc: list[str]
    reply_to: str | None
    subject: str | None
    date: datetime | None
    in_reply_to: str | None
    references: list[str]
    text: str
    html: str | None
    attachments: list[AttachmentInfo]
    auto_submitted: str | None
    precedence: str | None
    list_id: str | None  # the list's identifier, without angle brackets
    defects: list[str] = field(default_factory=list)


_MSGIDS = re.compile(r"<([^<>]+)>")
_ADDR = re.compile(r"[^\s<>,;:\"()\[\]]+@[^\s<>,;:\"()\[\]]+")
_META_CHARSET = re.compile(rb"<meta[^>]+charset=[\"']?([\w.:-]+)", re.IGNORECASE)
_BOUNDARY_LINE = re.compile(rb"^--([^\s\"]{1,200})[ \t]*$", re.MULTILINE)
_TAG = re.compile(r"<[^>]*>")
_MAX_DEPTH = 40


def _raw(msg: Message, name: str, defects: list[str]) -> str | None:
    """The first field called ``name``, unfolded, 8-bit bytes decoded; None if absent."""
    for key, value in msg.raw_items():
        if key.lower() == name:
            text = re.sub(r"\r?\n(?=[ \t])", "", str(value)).replace("\r", "").replace("\n", "")
            return clean(text, defects).strip()
    return None


def _text_header(msg: Message, name: str, defects: list[str]) -> str | None:
    value = _raw(msg, name, defects)
    return None if value is None else decode_words(value, defects)


def _addresses(msg: Message, name: str, defects: list[str]) -> list[tuple[str, str]]:
    """(display name, addr-spec) pairs of an address field, groups flattened."""
    raw = _raw(msg, name, defects)
    if not raw:
        return []
    try:
        header = policy.default.header_factory(name, raw)
        found = [
            (clean(a.display_name, defects), clean(a.addr_spec, defects)) for a in header.addresses
        ]
        defects.extend(type(d).__name__ for d in header.defects)
    except Exception:  # noqa: BLE001 - the stdlib's header parser has known crashes
        defects.append(f"{name}: unparsable address field")
        found = []
    found = [(dn, spec) for dn, spec in found if spec and spec != "<>"]
    if not found:
        found = [("", spec) for spec in _ADDR.findall(raw)]
    return found


def _date(msg: Message, defects: list[str]) -> datetime | None:
    value = _raw(msg, "date", defects)
    if value is None:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError, IndexError):
        defects.append("Date: unparsable")
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _filename(part: Message, defects: list[str]) -> str | None:
    name = part.get_filename() or part.get_param("name")
    if isinstance(name, tuple):  # an RFC 2231 value get_param did not collapse
        name = name[2]
    if not isinstance(name, str) or not name.strip():
        return None
    return decode_words(clean(name, defects), defects).strip()


def _ids(value: str | None) -> list[str]:
    """The msg-ids of In-Reply-To or References in order, once each, without brackets."""
    found = _MSGIDS.findall(value or "") or (value or "").split()
    return [i for i in dict.fromkeys(normalize_msgid(x) for x in found) if i]


def _payload(part: Message) -> bytes:
    if part.get_content_maintype() in ("multipart", "message"):
        inner = part.get_payload()
        if isinstance(inner, list):
            try:
                return b"".join(
                    m.as_bytes(policy=policy.compat32) for m in inner if isinstance(m, Message)
                )
            except Exception:  # noqa: BLE001 - only its size is wanted
                return b""
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


class _Body:
    """What a walk over the MIME tree collects."""

    def __init__(self) -> None:
        self.plain: list[str] = []
        self.html: list[str] = []
        self.attachments: list[AttachmentInfo] = []
        self.defects: list[str] = []

    def walk(self, part: Message, depth: int = 0) -> None:
        self.defects.extend(type(d).__name__ for d in part.defects)
        try:
            if part.is_multipart() and part.get_content_maintype() == "multipart":
                if depth >= _MAX_DEPTH:
                    self.defects.append("MIME nesting too deep; the rest ignored")
                    return
                for child in part.get_payload():
                    if isinstance(child, Message):
                        self.walk(child, depth + 1)
                return
            self.leaf(part)
        except Exception as exc:  # noqa: BLE001 - one unreadable part, not the mail
            self.defects.append(f"unreadable MIME part: {type(exc).__name__}: {exc}")

    def leaf(self, part: Message) -> None:
        ctype = part.get_content_type()
        disposition = part.get_content_disposition()
        filename = _filename(part, self.defects)
        if ctype.startswith("multipart/"):  # no usable boundary: keep its text at least
            self.plain.append(self.decode(part, None))
        elif ctype in ("text/plain", "text/html") and disposition != "attachment" and not filename:
            (self.plain if ctype == "text/plain" else self.html).append(self.decode(part, ctype))
        else:
            declared = (_raw(part, "content-type", self.defects) or "").split(";")[0]
            cid = normalize_msgid(_raw(part, "content-id", self.defects))
            payload = _payload(part)
            self.attachments.append(
                AttachmentInfo(
                    filename=filename,
                    content_type=declared.strip().lower() if "/" in declared else ctype,
                    size=len(payload),
                    content_id=cid,
                    inline=disposition == "inline" or (disposition is None and cid is not None),
                    data=payload,
                )
            )

    def decode(self, part: Message, ctype: str | None) -> str:
        data = _payload(part)
        charset = part.get_content_charset()
        if charset is None and ctype == "text/html":
            meta = _META_CHARSET.search(data[:4096])
            charset = meta.group(1).decode("ascii") if meta else None
        text = decode_text(data, charset, self.defects)
        return text.replace("\r\n", "\n").replace("\r", "\n")


def _recover_boundary(raw: bytes, msg: Message, defects: list[str]) -> Message:
    """A multipart without a (matching) boundary re-parsed with the one its body uses."""
    if msg.get_content_maintype() != "multipart" or msg.is_multipart():
        return msg
    body = split_message(raw)[1] or b""
    guess = _BOUNDARY_LINE.search(body)
    if guess is None:
        return msg
    boundary = guess.group(1).removesuffix(b"--")
    head = b'Content-Type: %s; boundary="%s"\n\n' % (msg.get_content_type().encode(), boundary)
    fixed = BytesParser(policy=policy.default).parsebytes(head + body)
    if not fixed.is_multipart():
        return msg
    defects.append("multipart boundary missing or wrong; recovered from the body")
    return fixed


def _html_to_text(html: str, defects: list[str]) -> str:
    try:
        return html_text.extract_text(html)
    except Exception:  # noqa: BLE001 - lxml refuses some inputs; fall back to stripping tags
        defects.append("HTML body unparsable; tags stripped")
        return _TAG.sub(" ", html).strip()


def _parse(raw: bytes) -> ParsedMail:
    defects: list[str] = []
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    body = _Body()
    try:
        root = _recover_boundary(raw, msg, defects)
    except Exception as exc:  # noqa: BLE001 - the stdlib's header parser has known crashes
        defects.append(f"boundary recovery failed: {type(exc).__name__}")
        root = msg
    if root is not msg:
        defects.extend(type(d).__name__ for d in msg.defects)
    body.walk(root)
    senders = _addresses(msg, "from", defects)
    reply_to = _addresses(msg, "reply-to", defects)
    in_reply_to = _ids(_raw(msg, "in-reply-to", defects))
    list_id = _raw(msg, "list-id", defects)
    plain = next((t for t in body.plain if t.strip()), body.plain[0] if body.plain else "")
    html = body.html[0] if body.html else None
    text = plain if plain.strip() or html is None else _html_to_text(html, defects)
    return ParsedMail(
        message_id=message_id_of(raw),
        from_email=senders[0][1] if senders else None,
        from_name=(senders[0][0] or None) if senders else None,
        to=[spec for _, spec in _addresses(msg, "to", defects)],
        cc=[spec for _, spec in _addresses(msg, "cc", defects)],
        reply_to=reply_to[0][1] if reply_to else None,
        subject=_text_header(msg, "subject", defects),
        date=_date(msg, defects),
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=_ids(_raw(msg, "references", defects)),
        text=text,
        html=html,
        attachments=body.attachments,
        auto_submitted=_raw(msg, "auto-submitted", defects),
        precedence=_raw(msg, "precedence", defects),
        list_id=(normalize_msgid(list_id) if list_id else None),
        defects=list(dict.fromkeys(defects + body.defects)),
    )


def parse_mail(raw: bytes) -> ParsedMail:
    """The fields of a raw mail. Never raises: what could not be read is in ``defects``."""
    try:
        return _parse(raw)
    except Exception as exc:  # noqa: BLE001 - a mail is never refused for its MIME
        try:
            message_id = message_id_of(raw)
        except Exception:  # noqa: BLE001
            message_id = None
        defect = f"unparsable: {type(exc).__name__}: {exc}"
        return ParsedMail(message_id, None, None, [], [], None, None, None, None, [], "",
                          None, [], None, None, None, [defect])  # fmt: skip
