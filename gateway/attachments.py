"""Attachments: content-addressed, sized and typed by what they are, within limits.

The same file sent twice (a customer re-sending a screenshot, one mail to two
desks) is stored once, by its SHA-256. The content type shown is the one the
bytes prove where they prove one (PDF, images, archives), because a declared
type is the sender's claim. A file over `[ingest] max_attachment_size`, or
past `attachment_quota` for the whole store, is listed with `stored: false`
and a note; the message itself is never refused for it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from gateway.config import IngestConfig
from gateway.events import AttachmentData
from gateway.store import Tx

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"MZ", "application/x-msdownload"),
    (b"\x7fELF", "application/x-executable"),
)
# Formats that are zip files inside: their declared type is the more precise truth.
_ZIP_FAMILIES = ("application/vnd.openxmlformats", "application/vnd.oasis", "application/epub")


def sniff(data: bytes, declared: str) -> str:
    """The content type the bytes prove, else the declared one."""
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            if kind == "application/zip" and declared.startswith(_ZIP_FAMILIES):
                return declared
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return declared or "application/octet-stream"


@dataclass(frozen=True, slots=True)
class NewAttachment:
    """An attachment as a connector hands it to the core."""

    filename: str | None
    declared_type: str
    data: bytes
    content_id: str | None = None
    inline: bool = False


def attachment_id(sha256: str) -> str:
    return f"att_{sha256}"


async def store_attachments(
    tx: Tx,
    event_id: str,
    attachments: tuple[NewAttachment, ...],
    limits: IngestConfig,
    now: float,
) -> list[AttachmentData]:
    """Store within the limits and return what the event says of each attachment."""
    described: list[AttachmentData] = []
    used = await tx.attachment_bytes() if attachments else 0
    for item in attachments:
        sha = hashlib.sha256(item.data).hexdigest()
        size = len(item.data)
        kind = sniff(item.data, item.declared_type)
        note = None
        if size > limits.max_attachment_size:
            note = f"larger than [ingest] max_attachment_size ({limits.max_attachment_size} bytes)"
        elif not await tx.has_attachment(sha) and used + size > limits.attachment_quota:
            note = "the store's [ingest] attachment_quota is used up"
        if note is None:
            if await tx.put_attachment(sha, kind, item.data, now):
                used += size
            await tx.ref_attachment(event_id, sha)
        described.append(
            AttachmentData(
                id=attachment_id(sha) if note is None else None,
                filename=item.filename,
                content_type=kind,
                declared_type=item.declared_type,
                size=size,
                inline=item.inline,
                content_id=item.content_id,
                stored=note is None,
                note=note,
            )
        )
    return described
