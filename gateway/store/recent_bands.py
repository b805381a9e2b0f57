"""The band keys of recent fingerprints, in memory, for the anonymous-visitor link check.

Every fingerprinted message is a candidate for later messages of other contacts
for only minutes ([near_duplicates] anonymous_window), yet keeping its six keys
in an SQLite index cost twelve B-tree inserts and a lookup per message, about a
tenth of an ingest. The SQLite store is one process (the state lock sees to it),
so the keys live here instead; the fingerprint row keeps them too, and a store
that opens rebuilds this index from the newest rows.

The index follows the writer's transaction: what a unit adds is visible at once
to the units after it (as rows in the same transaction would be) and taken out
again if its savepoint or the transaction rolls back. It holds at most
`max_entries` messages (about 600 bytes each); under heavier traffic than that
many messages per window, the check looks back less far than the window.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import NamedTuple


class Recent(NamedTuple):
    at: float
    event_id: str
    contact_id: str
    anonymous: bool
    bands: tuple[int, ...]


def _slot(band: int, anonymous: bool) -> int:
    # Anonymous and identified senders apart: a check that wants only anonymous ones
    # never walks past a template thousands of identified customers share.
    return band << 1 | anonymous


class RecentBands:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._slots: dict[int, list[Recent]] = {}  # oldest first
        self._order: deque[Recent] = deque()  # every entry, oldest first
        self._staged: list[Recent] = []  # added by the open transaction
        self._mark = 0  # len(_staged) at the unit's savepoint

    def __len__(self) -> int:
        return len(self._order)

    def add(self, entry: Recent, *, staged: bool = True) -> None:
        for band in entry.bands:
            self._slots.setdefault(_slot(band, entry.anonymous), []).append(entry)
        self._order.append(entry)
        if staged:
            self._staged.append(entry)
        while len(self._order) > self.max_entries:
            self._drop_oldest()

    def find(
        self,
        bands: Iterable[int],
        since: float,
        anonymous_only: bool,
        limit: int,
        excluded: Callable[[], set[str]],
    ) -> list[Recent]:
        """Up to `limit` distinct entries since `since` sharing a key, newest first per key.

        `excluded` gives the contacts to leave out (the asking contact's merge group); it
        is called only once there is a candidate at all.
        """
        self.forget_before(since)
        kinds = (True,) if anonymous_only else (True, False)
        found: dict[str, Recent] = {}
        skip: set[str] | None = None
        for band in bands:
            for anonymous in kinds:
                for entry in reversed(self._slots.get(_slot(band, anonymous), ())):
                    if entry.at < since:
                        break
                    if entry.event_id in found:
                        continue
                    if skip is None:
                        skip = excluded()
                    if entry.contact_id not in skip:
                        found[entry.event_id] = entry
                        if len(found) >= limit:
                            return list(found.values())
        return list(found.values())

    def forget_before(self, at: float) -> None:
        order = self._order
        while order and order[0].at < at:
            self._drop_oldest()

    def forget_contacts(self, contact_ids: set[str]) -> None:
        """For erasure. Not undone by a rollback: the hints of an erasure that failed and
        is retried are lost, which costs at most a suggestion."""
        kept = [e for e in self._order if e.contact_id not in contact_ids]
        self._slots.clear()
        self._order.clear()
        for entry in kept:
            self.add(entry, staged=False)
        self._staged = [e for e in self._staged if e.contact_id not in contact_ids]
        self._mark = min(self._mark, len(self._staged))

    # The writer's transaction, as the store's engine sees it.

    def begin(self) -> None:
        self._staged.clear()
        self._mark = 0

    def savepoint(self) -> None:
        self._mark = len(self._staged)

    def rollback_to_savepoint(self) -> None:
        self._discard(self._staged[self._mark :])
        del self._staged[self._mark :]

    def committed(self) -> None:
        self.begin()  # what the group added stays; nothing is staged any more

    def rolled_back(self) -> None:
        self._discard(self._staged)
        self.begin()

    def _discard(self, entries: list[Recent]) -> None:
        gone = {id(e) for e in entries}
        if not gone:
            return
        for entry in entries:
            for band in entry.bands:
                slot = _slot(band, entry.anonymous)
                kept = [e for e in self._slots.get(slot, ()) if id(e) not in gone]
                if kept:
                    self._slots[slot] = kept
                else:
                    self._slots.pop(slot, None)
        self._order = deque(e for e in self._order if id(e) not in gone)

    def _drop_oldest(self) -> None:
        entry = self._order.popleft()
        for band in entry.bands:
            slot = _slot(band, entry.anonymous)
            entries = self._slots.get(slot)
            if not entries:
                continue
            if entries[0] is entry:
                del entries[0]
            else:  # slots and order are appended together, so never expected
                entries[:] = [e for e in entries if e is not entry]
            if not entries:
                del self._slots[slot]
