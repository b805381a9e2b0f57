"""The dedup key of a raw mail: its Message-ID plus a digest of its content.

Everything here works on the raw bytes and is cheap enough to run before the SMTP
250 answer: no MIME parsing, no body decoding. The digest leaves out the trace
header fields that differ between two deliveries of the same mail (the copy an MTA
hands us by SMTP and the one an IMAP server returns), and the line endings, so
both give one key.
"""

from __future__ import annotations

import hashlib
import re

__all__ = [
    "TRACE_HEADERS",
    "content_digest",
    "dedup_key",
    "message_id_of",
    "normalize_msgid",
    "split_message",
]

# Header fields left out of the digest, lower-cased; a trailing "*" is a prefix.
TRACE_HEADERS: tuple[str, ...] = (
    "received",
    "return-path",
    "delivered-to",
    "x-original-to",
    "x-envelope-from",
    "x-envelope-to",
    "authentication-results",
    "arc-authentication-results",
    "arc-seal",
    "arc-message-signature",
    "received-spf",
    "x-spam-*",
    "x-virus-*",
)
_TRACE_EXACT = frozenset(h for h in TRACE_HEADERS if not h.endswith("*"))
_TRACE_PREFIXES = tuple(h[:-1] for h in TRACE_HEADERS if h.endswith("*"))

_FIELD_NAME = re.compile(rb"^([^:\s]+)[ \t]*:")
_MESSAGE_ID = re.compile(rb"^message-id[ \t]*:(.*(?:\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)
_BRACKETED = re.compile(r"<([^<>]*)>")
_WHITESPACE = re.compile(r"\s+")


def _normalize_eol(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def split_message(raw: bytes) -> tuple[bytes, bytes | None]:
    """The header block and the body (None when there is no empty line), LF endings."""
    text = _normalize_eol(raw)
    if text.startswith(b"\n"):
        return b"", text[1:]
    end = text.find(b"\n\n")
    if end < 0:
        return text, None
    return text[: end + 1], text[end + 2 :]


def _header_block(raw: bytes) -> bytes:
    """Only the header block, LF endings, without normalizing the whole body."""
    end = -1
    for sep in (b"\n\n", b"\n\r\n", b"\r\r"):
        pos = raw.find(sep)
        if pos >= 0 and (end < 0 or pos < end):
            end = pos
    head = raw if end < 0 else raw[: end + 1]
    return split_message(head)[0]


def _is_trace(line: bytes) -> bool:
    match = _FIELD_NAME.match(line)
    if match is None:
        return False
    name = match.group(1).decode("ascii", "replace").lower()
    return name in _TRACE_EXACT or name.startswith(_TRACE_PREFIXES)


def content_digest(raw: bytes) -> str:
    """Hex sha256 of the message without trace header fields, with LF line endings and
    no trailing whitespace at its end."""
    head, body = split_message(raw)
    kept: list[bytes] = []
    dropping = False
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if not dropping:  # a continuation line belongs to the field above it
                kept.append(line)
            continue
        dropping = _is_trace(line)
        if not dropping:
            kept.append(line)
    text = b"\n".join(kept).strip(b"\n")
    if body is not None:
        text += b"\n\n" + body
    return hashlib.sha256(text.rstrip()).hexdigest()


def normalize_msgid(value: str | None) -> str | None:
    """A Message-ID without surrounding whitespace and angle brackets, case kept;
    None when nothing is left."""
    if value is None:
        return None
    match = _BRACKETED.search(value)
    ident = match.group(1) if match else value.strip().strip("<>")
    ident = _WHITESPACE.sub("", ident)
    return ident or None


def message_id_of(raw: bytes) -> str | None:
    """The Message-ID of a raw mail (the first such field), found by a scan of its
    header block only."""
    match = _MESSAGE_ID.search(_header_block(raw))
    if match is None:
        return None
    value = match.group(1).replace(b"\n", b"").decode("utf-8", "replace")
    return normalize_msgid(value)


def dedup_key(raw: bytes, message_id: str | None) -> str:
    """``mid:<Message-ID>:<digest>``, or ``synthetic:<digest>`` for a mail without one."""
    digest = content_digest(raw)
    ident = normalize_msgid(message_id)
    if ident is None:
        return f"synthetic:{digest}"
    return f"mid:{ident}:{digest}"
