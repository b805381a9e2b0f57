"""When a mail reached the MTAs helpline trusts, from their own Received fields.

A mail's Date is the sender's claim; a Received field added by one of our own
relays (named in `trusted_authserv_ids`) is not. The trusted fields are the
topmost ones (each hop prepends its own), so the walk goes down from the top
while the receiving host is trusted; the last of that run says when the mail
entered the trusted path. Anything below it could be written by anyone.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.message import Message
from email.utils import parsedate_to_datetime

_BY = re.compile(r"\bby\s+([^\s;()]+)", re.IGNORECASE)
_COMMENT = re.compile(r"\([^()]*\)")


def trusted_received_at(headers: Message, trusted: frozenset[str]) -> datetime | None:
    """When the first trusted relay received the mail, or None (no trusted hop on top)."""
    if not trusted:
        return None
    earliest = None
    for field in headers.get_all("Received") or []:
        text = " ".join(str(field).split())
        by = _BY.search(_COMMENT.sub(" ", text.rpartition(";")[0] or text))
        if by is None or by.group(1).lower().rstrip(".") not in trusted:
            break
        try:
            when = parsedate_to_datetime(text.rpartition(";")[2].strip())
        except (TypeError, ValueError, IndexError):
            break
        earliest = when if when.tzinfo else when.replace(tzinfo=UTC)
    return earliest
