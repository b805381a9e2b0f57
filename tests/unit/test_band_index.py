"""The cross-contact candidate lookup reads what it uses, however hot a template is.

Counted in SQLite virtual-machine steps (deterministic), not in seconds: a lookup
among thousands of messages sharing a band key must cost about what it costs among
a handful. Without the (band, anonymous, at) index the first version of this query
read every row of the band, and ingest fell from 1,500 to 110 messages a second.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from gateway.store.migrate import migrate_sqlite
from gateway.store.sqlite_tx import SqliteTx


def steps(conn: sqlite3.Connection, work: object) -> int:
    counted = [0]

    def tick() -> int:
        counted[0] += 1
        return 0

    conn.set_progress_handler(tick, 10)
    try:
        asyncio.run(work)  # type: ignore[arg-type]
    finally:
        conn.set_progress_handler(None, 0)
    return counted[0] * 10


def fill(conn: sqlite3.Connection, identified: int) -> SqliteTx:
    tx = SqliteTx(conn)

    async def put() -> None:
        conn.execute("BEGIN")
        for n in range(identified + 5):
            anonymous = n >= identified
            await tx.put_fingerprint(
                f"evt_{n}",
                f"ct_{n}",
                at=1000.0 + n,
                sketch=b"s",
                bands=[42, 7],
                anonymous=anonymous,
            )

    asyncio.run(put())
    return tx


def lookup_cost(tmp_path: Path, identified: int, anonymous_only: bool) -> int:
    conn = sqlite3.connect(tmp_path / f"db{identified}{anonymous_only}", isolation_level=None)
    migrate_sqlite(conn)
    tx = fill(conn, identified)
    return steps(conn, tx.band_candidates([42, 99], 0.0, "ct_me", anonymous_only, 20))


def test_lookup_cost_does_not_grow_with_a_hot_band(tmp_path: Path) -> None:
    for anonymous_only in (True, False):
        few = lookup_cost(tmp_path, 50, anonymous_only)
        many = lookup_cost(tmp_path, 5000, anonymous_only)
        assert many < few * 2, (anonymous_only, few, many)
