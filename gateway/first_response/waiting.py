"""Who is waiting for a first answer, by age band: the running clocks' start times in memory.

The gauge used to be counted in SQLite every few seconds, which read every running
clock (about 1 us each, on the daemon's one core: 10 ms at 10,000 unanswered
conversations, half a group commit's cycle, and ten times that for a team with a real
backlog). The tracker is the only writer of clocks, so it keeps their start times here
as its transactions commit, after loading them once at start; a band is then counted
with two bisections, however many wait.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable

# Upper bound of each band's age in seconds, ascending; a band holds the ages from the
# previous bound (inclusive) to its own (exclusive).
AGE_BANDS: dict[str, float] = {
    "under_1m": 60,
    "1m_to_5m": 300,
    "5m_to_15m": 900,
    "15m_to_1h": 3600,
    "1h_to_4h": 14400,
    "4h_to_1d": 86400,
    "over_1d": float("inf"),
}


class RunningClocks:
    """Start times of the running clocks, sorted per channel."""

    def __init__(self, clocks: Iterable[tuple[int, str, float]] = ()) -> None:
        self._starts: dict[str, list[float]] = {}
        self._clocks: dict[int, tuple[str, float]] = {}
        for clock_id, channel, started_at in clocks:
            self.started(clock_id, channel, started_at)

    def __len__(self) -> int:
        return len(self._clocks)

    def started(self, clock_id: int, channel: str, started_at: float) -> None:
        if clock_id in self._clocks:
            return
        self._clocks[clock_id] = (channel, started_at)
        insort(self._starts.setdefault(channel, []), started_at)  # mostly an append

    def stopped(self, clock_id: int) -> None:
        found = self._clocks.pop(clock_id, None)
        if found is not None:
            channel, started_at = found
            starts = self._starts[channel]
            del starts[bisect_left(starts, started_at)]

    def counts(self, now: float, bands: dict[str, float]) -> dict[tuple[str, str], int]:
        """Per (channel, band): the clocks whose age `now - started_at` falls in the band
        (a start in the future counts as the youngest)."""
        found: dict[tuple[str, str], int] = {}
        for channel, starts in self._starts.items():
            younger = 0  # clocks younger than the previous bound
            for name, bound in bands.items():
                # age < bound  <=>  started_at > now - bound
                older = bisect_right(starts, now - bound) if bound != float("inf") else 0
                below = len(starts) - older
                found[(channel, name)] = below - younger
                younger = below
        return found
