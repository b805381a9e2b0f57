"""The waiting gauge's in-memory index gives the counts of a scan of every running clock."""

from __future__ import annotations

import random

from gateway.first_response.waiting import AGE_BANDS, RunningClocks


def scanned(clocks: dict[int, tuple[str, float]], now: float) -> dict[tuple[str, str], int]:
    """The definition: each clock in the first band whose bound exceeds its age."""
    found: dict[tuple[str, str], int] = {}
    for channel, started in clocks.values():
        band = next(name for name, bound in AGE_BANDS.items() if now - started < bound)
        found[(channel, band)] = found.get((channel, band), 0) + 1
    return found


def test_counts_match_a_scan_through_starts_stops_and_equal_start_times() -> None:
    rng = random.Random(11)
    now = 1_800_000_000.0
    live: dict[int, tuple[str, float]] = {}
    index = RunningClocks()
    for clock_id in range(3000):
        channel = rng.choice(["email", "chat", "voice"])
        # ages across every band, exactly on band bounds, repeated instants, a few in the future
        started = now - rng.choice([rng.uniform(-5, 200_000), 60.0, 300.0, 86400.0, 17.0])
        live[clock_id] = (channel, started)
        index.started(clock_id, channel, started)
        if rng.random() < 0.3:
            gone = rng.choice(list(live))
            del live[gone]
            index.stopped(gone)
    index.started(next(iter(live)), "email", now)  # already known: no second entry
    index.stopped(999_999)  # never started (answered before a restart): nothing changes
    assert len(index) == len(live)
    counts = index.counts(now, AGE_BANDS)
    assert {k: v for k, v in counts.items() if v} == scanned(live, now)
    later = now + 3600
    assert {k: v for k, v in index.counts(later, AGE_BANDS).items() if v} == scanned(live, later)


def test_loaded_at_start_like_added_one_by_one() -> None:
    rows = [(1, "chat", 100.0), (2, "chat", 50.0), (3, "email", 10.0)]
    assert RunningClocks(rows).counts(200.0, AGE_BANDS) == {
        ("chat", "under_1m"): 0,
        ("chat", "1m_to_5m"): 2,
        ("chat", "5m_to_15m"): 0,
        ("chat", "15m_to_1h"): 0,
        ("chat", "1h_to_4h"): 0,
        ("chat", "4h_to_1d"): 0,
        ("chat", "over_1d"): 0,
        ("email", "under_1m"): 0,
        ("email", "1m_to_5m"): 1,
        ("email", "5m_to_15m"): 0,
        ("email", "15m_to_1h"): 0,
        ("email", "1h_to_4h"): 0,
        ("email", "4h_to_1d"): 0,
        ("email", "over_1d"): 0,
    }
