"""The position arithmetic: finishing out of order never moves the mark past a pending event."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.delivery.position import PendingOffsets
from gateway.store.delivery import Position


@given(st.permutations(list(range(1, 41))), st.sets(st.integers(1, 40)))
def test_the_mark_is_the_last_offset_below_every_pending_one(
    order: list[int], skipped: set[int]
) -> None:
    offsets = PendingOffsets(Position(0, 0, frozenset()))
    for offset in range(1, 41):
        assert offsets.read(offset)
        if offset not in skipped:  # a skipped one is not the backend's: never pending
            offsets.add(offset, float(offset))
    pending = set(range(1, 41)) - skipped
    for offset in order:
        if offset not in pending:
            continue
        expected = min(pending - {offset}, default=41) - 1
        assert offsets.low_water_without(offset) == expected
        pending.discard(offset)
        assert offsets.finish(offset) == (min(pending) - 1 if pending else 40)
        assert offsets.oldest_time() == (float(min(pending)) if pending else None)
    assert len(offsets) == 0


def test_offsets_finished_in_an_earlier_run_are_not_read_again() -> None:
    offsets = PendingOffsets(Position(10, 1010, frozenset({12, 14})))
    assert [offsets.read(n) for n in (11, 12, 13, 14, 15)] == [True, False, True, False, True]
    assert offsets.maybe_sent_upto == 1010 and offsets.frontier == 15
