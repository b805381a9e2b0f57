"""Which events a backend has finished: the arithmetic of its durable position.

Events are read in offset order but finish out of order (lanes run
concurrently), so the position is a low-water mark (everything at or below it
is finished) plus what is pending above it. This class keeps that in memory;
the engine writes what it says, in the transaction that finishes each event,
so the stored mark never passes an event that is not finished.
"""

from __future__ import annotations

import heapq

from gateway.store.delivery import Position


class PendingOffsets:
    def __init__(self, position: Position) -> None:
        self.frontier = position.low_water  # the last offset read from the stream
        self.dispatched = position.dispatched  # nothing above it was ever sent
        self.maybe_sent_upto = position.dispatched  # before this start: may have been sent
        self._done_above = set(position.done)  # finished in an earlier run, above the mark
        self._pending: set[int] = set()
        self._heap: list[int] = []  # the pending offsets, plus finished ones not yet popped
        self._times: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, offset: int) -> bool:
        return offset in self._pending

    def read(self, offset: int) -> bool:
        """Move the frontier to `offset`; False if an earlier run finished it already."""
        self.frontier = offset
        if offset in self._done_above:
            self._done_above.discard(offset)
            return False
        return True

    def add(self, offset: int, at: float) -> None:
        """An event read and handed to a lane; `at` is its time (for the lag's age)."""
        self._pending.add(offset)
        heapq.heappush(self._heap, offset)
        self._times[offset] = at

    def low_water(self) -> int:
        """Every offset at or below this is finished (or not the backend's)."""
        while self._heap and self._heap[0] not in self._pending:
            heapq.heappop(self._heap)
        return self._heap[0] - 1 if self._heap else self.frontier

    def low_water_without(self, offset: int) -> int:
        """The mark once `offset` is finished (for the transaction that finishes it)."""
        low = self.low_water()
        if low + 1 != offset:
            return low  # something older is still pending
        rest = self._pending - {offset}
        return min(rest) - 1 if rest else self.frontier

    def finish(self, offset: int) -> int:
        """Forget a finished offset; the new low-water mark."""
        self._pending.discard(offset)
        self._times.pop(offset, None)
        if len(self._heap) > 4 * len(self._pending) + 64:
            # One event retrying for long holds the heap's top: finished offsets behind it
            # would pile up, so rebuild from what is really pending.
            self._heap = sorted(self._pending)
        return self.low_water()

    def oldest_time(self) -> float | None:
        """The time of the oldest pending event (the lag's age), if any is pending."""
        if not self._pending:
            return None
        return self._times.get(self.low_water() + 1)
