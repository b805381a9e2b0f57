"""Ticket-backend state in SQLite: the writer's side (a mixin of SqliteTx) and the reads.

Reads take the reader connection, so the backends API and the engine's
lookups never wait behind a commit.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from gateway.store.delivery import DeadLetter, Position, Ref, RefKind

_LETTER = (
    "SELECT backend, seq, event_id, type, conversation_id, status, error, attempts, "
    "parked_at, replay_requested FROM dead_letters"
)


def _letter(row: tuple[Any, ...]) -> DeadLetter:
    return DeadLetter(
        backend=str(row[0]),
        offset=int(row[1]),
        event_id=str(row[2]),
        type=str(row[3]),
        conversation_id=row[4],
        status=int(row[5]) if row[5] is not None else None,
        error=str(row[6]),
        attempts=int(row[7]),
        parked_at=float(row[8]),
        replay_requested=float(row[9]) if row[9] is not None else None,
    )


def _ref(row: tuple[Any, ...]) -> Ref:
    return Ref(row[0], str(row[1]), row[2], row[3], row[4])


class SqliteDeliveryTx:
    _conn: sqlite3.Connection

    async def init_position(self, backend: str, low_water: int, now: float) -> None:
        self._conn.execute(
            "INSERT OR IGNORE INTO backend_positions (backend, low_water, dispatched, updated_at) "
            "VALUES (?, ?, ?, ?)",
            (backend, low_water, low_water, now),
        )

    async def finish_event(self, backend: str, offset: int, low_water: int, now: float) -> None:
        if offset > low_water:
            self._conn.execute(
                "INSERT OR IGNORE INTO backend_done (backend, seq) VALUES (?, ?)", (backend, offset)
            )
        moved = self._conn.execute(
            "UPDATE backend_positions SET low_water = ?, updated_at = ? "
            "WHERE backend = ? AND low_water < ?",
            (low_water, now, backend, low_water),
        )
        if moved.rowcount:
            self._conn.execute(
                "DELETE FROM backend_done WHERE backend = ? AND seq <= ?", (backend, low_water)
            )

    async def set_dispatched(self, backend: str, offset: int, now: float) -> None:
        self._conn.execute(
            "UPDATE backend_positions SET dispatched = max(dispatched, ?), updated_at = ? "
            "WHERE backend = ?",
            (offset, now, backend),
        )

    async def put_ref(self, backend: str, ref: Ref, now: float) -> None:
        self._conn.execute(
            "INSERT INTO backend_refs (backend, kind, local_id, remote_id, state, event_id, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (backend, kind, local_id) DO UPDATE SET "
            "remote_id = excluded.remote_id, state = excluded.state, "
            "event_id = excluded.event_id, updated_at = excluded.updated_at",
            (backend, ref.kind, ref.local_id, ref.remote_id, ref.state, ref.event_id, now, now),
        )

    async def park(self, letter: DeadLetter) -> None:
        self._conn.execute(
            "INSERT INTO dead_letters (backend, seq, event_id, type, conversation_id, status, "
            "error, attempts, parked_at, replay_requested) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL) "
            "ON CONFLICT (backend, seq) DO UPDATE SET status = excluded.status, "
            "error = excluded.error, attempts = dead_letters.attempts + excluded.attempts, "
            "parked_at = excluded.parked_at, replay_requested = NULL",
            (
                letter.backend,
                letter.offset,
                letter.event_id,
                letter.type,
                letter.conversation_id,
                letter.status,
                letter.error,
                letter.attempts,
                letter.parked_at,
            ),
        )

    async def unpark(self, backend: str, offset: int) -> bool:
        gone = self._conn.execute(
            "DELETE FROM dead_letters WHERE backend = ? AND seq = ?", (backend, offset)
        )
        return gone.rowcount == 1

    async def request_replay(self, backend: str, offset: int | None, now: float) -> int:
        if offset is None:
            cursor = self._conn.execute(
                "UPDATE dead_letters SET replay_requested = ? WHERE backend = ?", (now, backend)
            )
        else:
            cursor = self._conn.execute(
                "UPDATE dead_letters SET replay_requested = ? WHERE backend = ? AND seq = ?",
                (now, backend, offset),
            )
        return int(cursor.rowcount)

    async def put_backend_state(self, backend: str, key: str, value: str, now: float) -> None:
        self._conn.execute(
            "INSERT INTO backend_state (backend, key, value, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (backend, key) DO UPDATE SET value = excluded.value, "
            "updated_at = excluded.updated_at",
            (backend, key, value, now),
        )

    async def put_delivered(self, event_id: str, backend: str, now: float) -> None:
        self._conn.execute(
            "INSERT OR IGNORE INTO backend_delivered (event_id, backend, delivered_at) "
            "VALUES (?, ?, ?)",
            (event_id, backend, now),
        )

    async def forget_delivered(self, before: float) -> int:
        gone = self._conn.execute("DELETE FROM backend_delivered WHERE delivered_at < ?", (before,))
        return int(gone.rowcount)


class SqliteDeliveryReads:
    """The DeliveryReads protocol on a read connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def position(self, backend: str) -> Position | None:
        row = self._conn.execute(
            "SELECT low_water, dispatched FROM backend_positions WHERE backend = ?", (backend,)
        ).fetchone()
        if row is None:
            return None
        done = self._conn.execute(
            "SELECT seq FROM backend_done WHERE backend = ? AND seq > ?", (backend, row[0])
        ).fetchall()
        return Position(int(row[0]), int(row[1]), frozenset(int(d[0]) for d in done))

    async def ref(self, backend: str, kind: RefKind, local_id: str) -> Ref | None:
        row = self._conn.execute(
            "SELECT kind, local_id, remote_id, state, event_id FROM backend_refs "
            "WHERE backend = ? AND kind = ? AND local_id = ?",
            (backend, kind, local_id),
        ).fetchone()
        return _ref(row) if row else None

    async def ref_by_remote(self, backend: str, kind: RefKind, remote_id: str) -> Ref | None:
        row = self._conn.execute(
            "SELECT kind, local_id, remote_id, state, event_id FROM backend_refs "
            "WHERE backend = ? AND kind = ? AND remote_id = ? ORDER BY created_at LIMIT 1",
            (backend, kind, remote_id),
        ).fetchone()
        return _ref(row) if row else None

    async def pending_refs(self, backend: str, kind: RefKind, since: float) -> int:
        row = self._conn.execute(
            "SELECT count(*) FROM backend_refs r "
            "WHERE r.backend = ? AND r.kind = ? AND r.state = 'pending' AND r.updated_at >= ? "
            "AND NOT EXISTS (SELECT 1 FROM dead_letters d "
            "WHERE d.backend = r.backend AND d.event_id = r.event_id)",
            (backend, kind, since),
        ).fetchone()
        return int(row[0])

    async def dead_letters(
        self, backend: str | None, *, conversation_id: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        clauses: list[str] = []
        params: list[object] = []
        if backend is not None:
            clauses.append("backend = ?")
            params.append(backend)
        if conversation_id is not None:
            clauses.append("conversation_id = ?")
            params.append(conversation_id)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._conn.execute(
            f"{_LETTER}{where} ORDER BY backend, seq LIMIT ?", (*params, limit)
        ).fetchall()
        return [_letter(row) for row in rows]

    async def dead_letter(self, backend: str, offset: int) -> DeadLetter | None:
        row = self._conn.execute(
            f"{_LETTER} WHERE backend = ? AND seq = ?", (backend, offset)
        ).fetchone()
        return _letter(row) if row else None

    async def replays_requested(self, backend: str, limit: int) -> list[DeadLetter]:
        rows = self._conn.execute(
            f"{_LETTER} WHERE backend = ? AND replay_requested IS NOT NULL ORDER BY seq LIMIT ?",
            (backend, limit),
        ).fetchall()
        return [_letter(row) for row in rows]

    async def dead_letter_count(self, backend: str) -> int:
        row = self._conn.execute(
            "SELECT count(*) FROM dead_letters WHERE backend = ?", (backend,)
        ).fetchone()
        return int(row[0])

    async def backend_state(self, backend: str, key: str) -> str | None:
        row = self._conn.execute(
            "SELECT value FROM backend_state WHERE backend = ? AND key = ?", (backend, key)
        ).fetchone()
        return str(row[0]) if row else None

    async def event_at(self, offset: int) -> bytes | None:
        row = self._conn.execute("SELECT body FROM events WHERE seq = ?", (offset,)).fetchone()
        return bytes(row[0]) if row else None
