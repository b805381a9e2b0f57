"""The one time format helpline writes: UTC, milliseconds, a Z.

A leaf module (it imports nothing of ours), so any module may use it without a cycle.
"""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(moment: datetime) -> str:
    if moment.tzinfo is not UTC:  # events carry UTC already: the common case skips this
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"  # "+00:00" -> "Z"
