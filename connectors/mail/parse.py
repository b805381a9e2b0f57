"""Parse a raw mail into the fields ingest needs, leniently: broken MIME never raises.

Uses the stdlib ``email`` package with ``policy.default`` semantics. Text is decoded
with its declared charset unless that is unknown or a lie (bytes not valid in it), in
which case UTF-8 and then charset-normalizer's detection decide; an HTML-only body is
turned into text with html-text. Whatever had to be repaired is listed in
``ParsedMail.defects``.

``policy.default`` parses a header field again each time it is read, and the
parser reads Content-Type many times per part (a multipart mail with a PDF: 12 ms
where the structure alone takes 1). So the structure is parsed with ``compat32``,
which keeps the fields as they came, and used only where the two policies provably
read every field the same way: the MIME fields of every part plain (ASCII tokens
and quoted strings, no comments, encoded words or RFC 2231 parameters). A leaf part
with other MIME fields is read through ``policy.default``; a container with them,
or anything unexpected, has the whole mail parsed with ``policy.default`` as before.
Address fields are read by ``policy.default``'s header factory, except the plain
forms (``Name <a@b>``, ``<a@b>``, ``a@b``), which read the same without it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import Message
from email.parser import BytesParser
from email.policy import Policy
from email.utils import parsedate_to_datetime

import html_text

from connectors.mail.charsets import clean, decode_text, decode_words
from connectors.mail.dedup import message_id_of, normalize_msgid, split_message
from connectors.mail.mime_alike import MAX_DEPTH, plain, read_alike

__all__ = ["AttachmentInfo", "ParsedMail", "header_fields", "parse_mail", "parse_with_headers"]


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
_FOLD = re.compile(r"\r?\n(?=[ \t])")
# Address fields that policy.default's header factory reads as this very text, no defect.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_ADDR_SPEC = rf"{_ATEXT}+(?:\.{_ATEXT}+)*@{_ATEXT}+(?:\.{_ATEXT}+)*"
_PLAIN_ADDRESS = re.compile(
    rf"(?:({_ATEXT}+(?:[ \t]+{_ATEXT}+)*)[ \t]*)?<({_ADDR_SPEC})>|({_ADDR_SPEC})"
)
_ADDR = re.compile(r"[^\s<>,;:\"()\[\]]+@[^\s<>,;:\"()\[\]]+")
_META_CHARSET = re.compile(rb"<meta[^>]+charset=[\"']?([\w.:-]+)", re.IGNORECASE)
_BOUNDARY_LINE = re.compile(rb"^--([^\s\"]{1,200})[ \t]*$", re.MULTILINE)
_TAG = re.compile(r"<[^>]*>")


def _fields(msg: Message) -> dict[str, str]:
    """The first field of each name (lower-cased) of a part, as it came."""
    first: dict[str, str] = {}
    for key, value in msg.raw_items():
        first.setdefault(key.lower(), value)
    return first


def _raw(fields: dict[str, str], name: str, defects: list[str]) -> str | None:
    """The first field called ``name``, unfolded, 8-bit bytes decoded; None if absent."""
    value = fields.get(name)
    if value is None:
        return None
    text = str(value)
    if "\n" in text or "\r" in text:
        text = _FOLD.sub("", text).replace("\r", "").replace("\n", "")
    return clean(text, defects).strip()


def _text_header(fields: dict[str, str], name: str, defects: list[str]) -> str | None:
    value = _raw(fields, name, defects)
    return None if value is None else decode_words(value, defects)


def _addresses(
    fields: dict[str, str], name: str, defects: list[str], fast: bool = True
) -> list[tuple[str, str]]:
    """(display name, addr-spec) pairs of an address field, groups flattened."""
    raw = _raw(fields, name, defects)
    if not raw:
        return []
    plain = _PLAIN_ADDRESS.fullmatch(raw) if fast else None
    if plain is not None and "=?" not in raw:  # read as policy.default reads it
        if plain.group(3):
            return [("", plain.group(3))]
        return [(" ".join((plain.group(1) or "").split()), plain.group(2))]
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


def _date(fields: dict[str, str], defects: list[str]) -> datetime | None:
    value = _raw(fields, "date", defects)
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
                if depth >= MAX_DEPTH:
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
            fields = _fields(part)
            declared = (_raw(fields, "content-type", self.defects) or "").split(";")[0]
            cid = normalize_msgid(_raw(fields, "content-id", self.defects))
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


def _recover_boundary(
    raw: bytes, msg: Message, defects: list[str], parse_policy: Policy = policy.default
) -> Message:
    """A multipart without a (matching) boundary re-parsed with the one its body uses."""
    if msg.get_content_maintype() != "multipart" or msg.is_multipart():
        return msg
    body = split_message(raw)[1] or b""
    guess = _BOUNDARY_LINE.search(body)
    if guess is None:
        return msg
    boundary = guess.group(1).removesuffix(b"--")
    head = b'Content-Type: %s; boundary="%s"\n\n' % (msg.get_content_type().encode(), boundary)
    fixed = BytesParser(policy=parse_policy).parsebytes(head + body)
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


def _structure(raw: bytes, parse_policy: Policy, defects: list[str]) -> tuple[Message, Message]:
    """The parsed mail and the root of its MIME tree (another when a boundary was
    recovered)."""
    msg = BytesParser(policy=parse_policy).parsebytes(raw)
    try:
        root = _recover_boundary(raw, msg, defects, parse_policy)
    except Exception as exc:  # noqa: BLE001 - the stdlib's header parser has known crashes
        defects.append(f"boundary recovery failed: {type(exc).__name__}")
        root = msg
    return msg, root


def _parse(raw: bytes, found: list[Message]) -> ParsedMail:
    """The mail's fields; its parsed header fields appended to ``found`` when they read as
    `header_fields` reads them (the structure parsed with compat32)."""
    defects: list[str] = []
    try:
        msg, root = _structure(raw, policy.compat32, defects)
        alike = plain(msg, "content-type") and read_alike(root)
    except Exception:  # noqa: BLE001 - policy.default decides what happens then
        alike = False
    if not alike:
        defects = []
        msg, root = _structure(raw, policy.default, defects)
    elif msg.policy is policy.compat32:  # (not a leaf switched to policy.default)
        found.append(msg)
    return _read(raw, msg, root, defects)


def _parse_default(raw: bytes) -> ParsedMail:
    """What `_parse` must equal: the whole mail parsed with policy.default and every
    address field read by its header factory (the tests compare the two)."""
    defects: list[str] = []
    msg, root = _structure(raw, policy.default, defects)
    return _read(raw, msg, root, defects, fast=False)


def _read(
    raw: bytes, msg: Message, root: Message, defects: list[str], fast: bool = True
) -> ParsedMail:
    body = _Body()
    if root is not msg:
        defects.extend(type(d).__name__ for d in msg.defects)
    body.walk(root)
    head = _fields(msg)
    senders = _addresses(head, "from", defects, fast)
    reply_to = _addresses(head, "reply-to", defects, fast)
    in_reply_to = _ids(_raw(head, "in-reply-to", defects))
    list_id = _raw(head, "list-id", defects)
    plain = next((t for t in body.plain if t.strip()), body.plain[0] if body.plain else "")
    html = body.html[0] if body.html else None
    text = plain if plain.strip() or html is None else _html_to_text(html, defects)
    return ParsedMail(
        message_id=message_id_of(raw),
        from_email=senders[0][1] if senders else None,
        from_name=(senders[0][0] or None) if senders else None,
        to=[spec for _, spec in _addresses(head, "to", defects, fast)],
        cc=[spec for _, spec in _addresses(head, "cc", defects, fast)],
        reply_to=reply_to[0][1] if reply_to else None,
        subject=_text_header(head, "subject", defects),
        date=_date(head, defects),
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=_ids(_raw(head, "references", defects)),
        text=text,
        html=html,
        attachments=body.attachments,
        auto_submitted=_raw(head, "auto-submitted", defects),
        precedence=_raw(head, "precedence", defects),
        list_id=(normalize_msgid(list_id) if list_id else None),
        defects=list(dict.fromkeys(defects + body.defects)),
    )


def parse_mail(raw: bytes, *, reference: bool = False) -> ParsedMail:
    """The fields of a raw mail. Never raises: what could not be read is in ``defects``.
    ``reference``: the whole mail parsed with policy.default (slower; what tests compare
    the normal parse with)."""
    return _parse_mail(raw, [], reference)


def parse_with_headers(raw: bytes) -> tuple[ParsedMail, Message]:
    """`parse_mail` and `header_fields` of a mail, the header fields from the same parse
    when it read them alike (compat32, as they came: the usual case)."""
    found: list[Message] = []
    parsed = _parse_mail(raw, found, False)
    return parsed, found[0] if found else header_fields(raw)


def _parse_mail(raw: bytes, found: list[Message], reference: bool) -> ParsedMail:
    try:
        return _parse_default(raw) if reference else _parse(raw, found)
    except Exception as exc:  # noqa: BLE001 - a mail is never refused for its MIME
        found.clear()
        try:
            message_id = message_id_of(raw)
        except Exception:  # noqa: BLE001
            message_id = None
        defect = f"unparsable: {type(exc).__name__}: {exc}"
        return ParsedMail(message_id, None, None, [], [], None, None, None, None, [], "",
                          None, [], None, None, None, [defect])  # fmt: skip


def header_fields(raw: bytes) -> Message:
    """The header block alone, fields as they came (compat32): what the loop and sender
    checks read."""
    return message_from_bytes(split_message(raw)[0] + b"\n", policy=policy.compat32)
