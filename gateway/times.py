"""The one time format helpline writes: UTC, milliseconds, a Z.

A leaf module (it imports nothing of ours), so any module may use it without a cycle.
"""

from __future__ import annotations

from datetime import UTC, datetime

# The last instant formatted and its text: an event writes its accept time three or four
# times (the envelope, accepted_at, the conversation it opens), each a fresh isoformat.
# One tuple, replaced whole, so a reader on another thread never sees half of it.
_last: tuple[datetime, str] = (datetime.min.replace(tzinfo=UTC), "")


def rfc3339(moment: datetime) -> str:
    global _last  # noqa: PLW0603 - a one-entry cache
    last = _last
    if moment == last[0]:  # the same instant: the same text, whatever the zone
        return last[1]
    utc = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    text = utc.isoformat(timespec="milliseconds")[:-6] + "Z"  # "+00:00" -> "Z"
    _last = (moment, text)
    return text
