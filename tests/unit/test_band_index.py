"""The cross-contact candidate lookup: band keys held in memory, following the writer's
transaction, rebuilt when the store opens, bounded in size."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.store.recent_bands import Recent, RecentBands
from gateway.store.sqlite import SqliteStore


def fingerprint_unit(event: str, contact: str, at: float, anonymous: bool = False) -> Any:
    async def unit(tx: Any) -> None:
        await tx.put_fingerprint(
            event,
            contact,
            at=at,
            sketch=b"sketch-" + event.encode(),
            bands=[42, 7],
            anonymous=anonymous,
        )

    return unit


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "db")
    await opened.open()
    yield opened
    await opened.close()


async def candidates(
    store: SqliteStore,
    contact: str = "ct_me",
    *,
    anonymous_only: bool = False,
    since: float = 0.0,
    limit: int = 20,
) -> list[str]:
    async def unit(tx: Any) -> list[str]:
        found = await tx.band_candidates([42, 99], since, contact, anonymous_only, limit)
        return [event for event, _, _, _ in found]

    return await store.write(unit)


async def test_finds_other_contacts_sharing_a_key_with_their_sketches(store: SqliteStore) -> None:
    await store.write(fingerprint_unit("evt_1", "ct_a", 100.0))
    await store.write(fingerprint_unit("evt_2", "ct_me", 101.0))  # the asker's own
    await store.write(fingerprint_unit("evt_3", "ct_b", 102.0, anonymous=True))

    async def full(tx: Any) -> list[tuple[str, str, bool, bytes]]:
        return await tx.band_candidates([7], 0.0, "ct_me", False, 20)

    assert sorted(await store.write(full)) == [
        ("evt_1", "ct_a", False, b"sketch-evt_1"),
        ("evt_3", "ct_b", True, b"sketch-evt_3"),
    ]
    assert await candidates(store, anonymous_only=True) == ["evt_3"]
    assert len(await candidates(store, limit=1)) == 1
    assert sorted(await candidates(store, "ct_nobody")) == ["evt_1", "evt_2", "evt_3"]
    assert await candidates(store, since=101.5) == ["evt_3"]  # the window


async def test_a_contact_merged_into_the_asker_is_not_another_contact(store: SqliteStore) -> None:
    async def people(tx: Any) -> None:
        await tx.create_contact("ct_me", None, 1.0)
        await tx.create_contact("ct_old", None, 1.0)
        await tx.merge_contact("ct_old", "ct_me", None, "test", 2.0)

    await store.write(people)
    await store.write(fingerprint_unit("evt_1", "ct_old", 100.0))
    await store.write(fingerprint_unit("evt_2", "ct_a", 100.0))
    assert await candidates(store) == ["evt_2"]


async def test_keys_of_a_failed_unit_are_gone_and_the_others_stay(store: SqliteStore) -> None:
    async def bad(tx: Any) -> None:
        await fingerprint_unit("evt_bad", "ct_bad", 200.0)(tx)  # the last one in
        raise ValueError("refused")

    units = [
        fingerprint_unit("evt_1", "ct_a", 100.0),
        fingerprint_unit("evt_2", "ct_b", 100.0),
        bad,
    ]
    outcomes = await asyncio.gather(*(store.write(u) for u in units), return_exceptions=True)
    assert isinstance(outcomes[2], ValueError)
    assert sorted(await candidates(store)) == ["evt_1", "evt_2"]
    assert len(await candidates(store, limit=1)) == 1  # no ghost takes the one place


async def test_the_index_is_rebuilt_when_the_store_opens_again(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db")
    await store.open()
    await store.write(fingerprint_unit("evt_1", "ct_a", 100.0, anonymous=True))
    await store.write(fingerprint_unit("evt_2", "ct_b", 101.0))
    await store.close()

    store = SqliteStore(tmp_path / "db", recent_bands=1)  # room for the newest only
    await store.open()
    try:
        assert await candidates(store) == ["evt_2"]
    finally:
        await store.close()


async def test_erased_contacts_and_swept_fingerprints_are_no_candidates(store: SqliteStore) -> None:
    async def erase(tx: Any) -> None:
        await tx.erase_contacts(["ct_a"], 200.0)

    async def sweep(tx: Any) -> int:
        return await tx.forget_fingerprints(101.5)

    for n, contact in enumerate(("ct_a", "ct_b", "ct_c")):
        await store.write(fingerprint_unit(f"evt_{n}", contact, 100.0 + n))
    await store.write(erase)
    assert sorted(await candidates(store)) == ["evt_1", "evt_2"]
    assert await store.write(sweep) == 1
    assert await candidates(store) == ["evt_2"]


def test_the_index_holds_at_most_max_entries() -> None:
    index = RecentBands(100)
    for n in range(250):
        index.add(Recent(float(n), f"evt_{n}", f"ct_{n}", n % 2 == 0, (n % 3, 1000)), staged=False)
    assert len(index) == 100
    found = index.find([1000], 0.0, False, 1000, set)
    assert sorted(int(e.event_id[4:]) for e in found) == list(range(150, 250))
    # a hot key shared by identified senders is not walked for anonymous ones only
    anonymous = index.find([1000], 0.0, True, 1000, set)
    assert {e.anonymous for e in anonymous} == {True} and len(anonymous) == 50


def test_a_rolled_back_transaction_leaves_no_keys_and_a_committed_one_stays() -> None:
    index = RecentBands(10)
    index.begin()
    index.add(Recent(1.0, "evt_gone", "ct_a", False, (5,)))
    index.rolled_back()
    assert len(index) == 0 and index.find([5], 0.0, False, 10, set) == []
    index.begin()
    index.add(Recent(2.0, "evt_kept", "ct_a", False, (5,)))
    index.committed()
    index.rolled_back()  # the next transaction failing takes nothing committed with it
    assert [e.event_id for e in index.find([5], 0.0, False, 10, set)] == ["evt_kept"]
