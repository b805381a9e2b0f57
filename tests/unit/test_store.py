"""The SQLite store's own promises: migrations, refusal of newer schemas, grouped commits."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.store import Overloaded, SchemaTooNew
from gateway.store.migrate import latest_version
from gateway.store.sqlite import SqliteStore


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db")
    await store.open()
    await store.close()
    with sqlite3.connect(tmp_path / "db") as conn:
        conn.execute(f"PRAGMA user_version = {latest_version() + 1}")
    with pytest.raises(SchemaTooNew, match="newer than this helpline"):
        await SqliteStore(tmp_path / "db").open()


async def test_writes_that_arrive_together_share_a_commit(tmp_path: Path) -> None:
    sizes: list[int] = []
    store = SqliteStore(tmp_path / "db", on_batch=lambda _s, size: sizes.append(size))
    await store.open()

    async def unit(tx: Any) -> int:
        return 1

    try:
        results = await asyncio.gather(*(store.write(unit) for _ in range(50)))
        assert results == [1] * 50
        assert sum(sizes) == 50 and max(sizes) > 1  # grouped, not one commit each
        sizes.clear()
        await store.write(unit)
        assert sizes == [1]  # a lone write is not held back waiting for company
    finally:
        await store.close()


async def test_a_failing_unit_fails_alone(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db")
    await store.open()

    async def good(tx: Any) -> str:
        await tx.set_cursor("ok", 5, 0.0)
        return "ok"

    async def bad(tx: Any) -> str:
        await tx.set_cursor("bad", 7, 0.0)
        raise ValueError("refused")

    try:
        outcomes = await asyncio.gather(store.write(good), store.write(bad), return_exceptions=True)
        assert outcomes[0] == "ok" and isinstance(outcomes[1], ValueError)
        assert await store.get_cursor("ok") == 5
        assert await store.get_cursor("bad") is None  # rolled back to its savepoint
    finally:
        await store.close()


async def test_a_failing_unit_leaves_the_others_applied_exactly_once(tmp_path: Path) -> None:
    """The group runs again with savepoints when a unit fails: nothing of the first try
    may stay behind, so each counting unit counts once."""
    store = SqliteStore(tmp_path / "db")
    await store.open()

    async def count(tx: Any) -> int:
        value = (await tx.get_cursor("n") or 0) + 1
        await tx.set_cursor("n", value, 0.0)
        return value

    async def bad(tx: Any) -> int:
        await tx.set_cursor("n", 100, 0.0)
        raise ValueError("refused")

    try:
        units = [count, count, bad, count, bad, count]
        outcomes = await asyncio.gather(*(store.write(u) for u in units), return_exceptions=True)
        assert [o for o in outcomes if not isinstance(o, Exception)] == [1, 2, 3, 4]
        assert sum(isinstance(o, ValueError) for o in outcomes) == 2
        assert await store.get_cursor("n") == 4
    finally:
        await store.close()


async def test_past_max_pending_writes_are_refused_at_once(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db", max_pending=2)
    await store.open()
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(tx: Any) -> None:
        entered.set()
        await release.wait()

    async def quick(tx: Any) -> None:
        return None

    try:
        first = asyncio.create_task(store.write(slow))
        await entered.wait()
        second = asyncio.create_task(store.write(quick))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await store.write(quick)
        release.set()
        await asyncio.gather(first, second)
    finally:
        await store.close()
