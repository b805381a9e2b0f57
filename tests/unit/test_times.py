"""The stream's one time format, including its one-entry cache of the last instant."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from gateway.times import rfc3339


def test_every_instant_is_written_in_utc_with_milliseconds_and_a_z() -> None:
    at = datetime(2026, 3, 29, 0, 59, 59, 999_999, tzinfo=UTC)
    assert rfc3339(at) == "2026-03-29T00:59:59.999Z"  # truncated, never rounded up
    berlin = at.astimezone(ZoneInfo("Europe/Berlin"))  # the same instant, another zone
    assert rfc3339(berlin) == "2026-03-29T00:59:59.999Z"
    assert rfc3339(at + timedelta(microseconds=1)) == "2026-03-29T01:00:00.000Z"


def test_the_remembered_instant_never_answers_for_another() -> None:
    """Instants in turn, equal ones in other zones among them, each as formatted afresh."""
    rng = random.Random(7)
    zones = [UTC, ZoneInfo("America/New_York"), ZoneInfo("Asia/Kolkata"), ZoneInfo("Pacific/Apia")]
    base = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    instants = [base + timedelta(microseconds=rng.randrange(10**10)) for _ in range(200)]
    for at in instants + instants[::-1]:
        for moment in (at, at.astimezone(rng.choice(zones)), at):
            expected = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            assert rfc3339(moment) == expected
