"""First-response clocks in SQLite: the writer's side (a mixin of SqliteTx) and the reads.

Reads take any connection, so the reader serves reports and timers while the
writer commits.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from gateway.store.records import ClockRow

_COLUMNS = (
    "id, conversation_id, conversation_number, contact_id, channel, state, started_at, "
    "customer_at, target, calendar, due_at, breached_at, stopped_at, seconds, "
    "business_seconds, within_target, reply_event_id, reply_channel, rearm"
)


def _row(values: tuple[Any, ...]) -> ClockRow:
    (
        ident,
        conversation,
        number,
        contact,
        channel,
        state,
        started,
        customer,
        target,
        calendar,
        due,
        breached,
        stopped,
        seconds,
        business,
        within,
        reply,
        reply_channel,
        rearm,
    ) = values
    return ClockRow(
        id=int(ident),
        conversation_id=str(conversation),
        conversation_number=int(number),
        contact_id=str(contact),
        channel=str(channel),
        state=str(state),
        started_at=float(started),
        customer_at=None if customer is None else float(customer),
        target=float(target),
        calendar=None if calendar is None else str(calendar),
        due_at=float(due),
        breached_at=None if breached is None else float(breached),
        stopped_at=None if stopped is None else float(stopped),
        seconds=None if seconds is None else float(seconds),
        business_seconds=None if business is None else float(business),
        within_target=None if within is None else bool(within),
        reply_event_id=None if reply is None else str(reply),
        reply_channel=None if reply_channel is None else str(reply_channel),
        rearm=bool(rearm),
    )


def due_clocks(conn: sqlite3.Connection, now: float, limit: int) -> list[ClockRow]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM first_response_clocks "
        "WHERE state = 'running' AND breached_at IS NULL AND due_at <= ? ORDER BY due_at LIMIT ?",
        (now, limit),
    ).fetchall()
    return [_row(r) for r in rows]


def next_due(conn: sqlite3.Connection) -> float | None:
    row = conn.execute(
        "SELECT min(due_at) FROM first_response_clocks "
        "WHERE state = 'running' AND breached_at IS NULL"
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def running_clocks(conn: sqlite3.Connection, limit: int) -> list[ClockRow]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM first_response_clocks WHERE state = 'running' "
        "ORDER BY started_at LIMIT ?",
        (limit,),
    ).fetchall()
    return [_row(r) for r in rows]


def met_clocks(conn: sqlite3.Connection, since: float, channel: str | None) -> list[ClockRow]:
    query = f"SELECT {_COLUMNS} FROM first_response_clocks WHERE state = 'met' AND stopped_at >= ?"
    args: tuple[object, ...] = (since,)
    if channel is not None:
        query += " AND channel = ?"
        args += (channel,)
    return [_row(r) for r in conn.execute(query + " ORDER BY stopped_at", args).fetchall()]


class SqliteClocksTx:
    _conn: sqlite3.Connection

    async def latest_clock(self, conversation_id: str) -> ClockRow | None:
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM first_response_clocks WHERE conversation_id = ? "
            "ORDER BY id DESC LIMIT 1",
            (conversation_id,),
        ).fetchone()
        return _row(row) if row else None

    async def put_clock(self, row: ClockRow) -> None:
        values = (
            row.conversation_id,
            row.conversation_number,
            row.contact_id,
            row.channel,
            row.state,
            row.started_at,
            row.customer_at,
            row.target,
            row.calendar,
            row.due_at,
            row.breached_at,
            row.stopped_at,
            row.seconds,
            row.business_seconds,
            None if row.within_target is None else int(row.within_target),
            row.reply_event_id,
            row.reply_channel,
            int(row.rearm),
        )
        if row.id is None:
            cursor = self._conn.execute(
                f"INSERT INTO first_response_clocks ({_COLUMNS.removeprefix('id, ')}) "
                f"VALUES ({', '.join('?' * len(values))})",
                values,
            )
            row.id = int(cursor.lastrowid or 0)
            return
        assignments = ", ".join(f"{c} = ?" for c in _COLUMNS.removeprefix("id, ").split(", "))
        self._conn.execute(
            f"UPDATE first_response_clocks SET {assignments} WHERE id = ?", (*values, row.id)
        )
