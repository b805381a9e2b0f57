"""The one time format helpline writes: UTC, milliseconds, a Z.

A leaf module (it imports nothing of ours), so any module may use it without a cycle.
"""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
