"""First-response clocks in SQLite: the writer's side (a mixin of SqliteTx) and the reads.

Reads take any connection, so the reader serves reports and timers while the
writer commits.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from gateway.store import Latencies, MetStats, Waiting
from gateway.store.records import ClockRow

_COLUMNS = (
    "id, conversation_id, conversation_number, contact_id, channel, state, started_at, "
    "customer_at, target, calendar, due_at, breached_at, stopped_at, seconds, "
    "business_seconds, within_target, reply_event_id, reply_channel, rearm, start_event_id"
)

# Built once: the statement cache hashes the SQL text at every execute, and a string made
# anew each time (an f-string) is hashed anew.
_LATEST = (
    f"SELECT {_COLUMNS} FROM first_response_clocks WHERE conversation_id = ? "
    "ORDER BY id DESC LIMIT 1"
)
_INSERT = (
    f"INSERT INTO first_response_clocks ({_COLUMNS.removeprefix('id, ')}) "
    f"VALUES ({', '.join('?' * len(_COLUMNS.split(', ')[1:]))})"
)
_UPDATE = (
    "UPDATE first_response_clocks SET "
    + ", ".join(f"{c} = ?" for c in _COLUMNS.removeprefix("id, ").split(", "))
    + " WHERE id = ?"
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
        start_event,
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
        start_event_id=None if start_event is None else str(start_event),
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


def running_clocks(conn: sqlite3.Connection) -> list[tuple[int, str, float]]:
    rows = conn.execute(
        "SELECT id, channel, started_at FROM first_response_clocks WHERE state = 'running'"
    ).fetchall()
    return [(int(i), str(c), float(s)) for i, c, s in rows]


_REAL = "seconds"
_BUSINESS = "coalesce(business_seconds, seconds)"  # business seconds where it had a calendar
_CUSTOMER = "started_at - customer_at"
_BY_CHANNEL = ("channel",)
_BY_DAY = ("date(stopped_at, 'unixepoch')", "channel")
# A clock with each backend's delivery of the event that started it.
_DELIVERED = (
    "first_response_clocks JOIN backend_delivered "
    "ON backend_delivered.event_id = first_response_clocks.start_event_id"
)


def _latencies(
    conn: sqlite3.Connection,
    value: str,
    keys: tuple[str, ...],
    *,
    since: float,
    until: float,
    channel: str | None,
    only: str = "",
    source: str = "first_response_clocks",
) -> dict[tuple[str, ...], Latencies]:
    """Summaries of `value` over the met clocks stopped in [since, until], grouped by `keys`.

    A range scan of the partial index on stopped_at; the percentiles are nearest rank
    (rank ceil(p * n / 100), in integers: the first rank with rank * 100 >= p * n), so
    only the summaries leave SQLite, never the clocks.
    """
    named = ", ".join(f"{key} AS k{i}" for i, key in enumerate(keys))
    group = ", ".join(f"k{i}" for i in range(len(keys)))
    where = "state = 'met' AND stopped_at >= ? AND stopped_at <= ?" + only
    args: tuple[object, ...] = (since, until)
    if channel is not None:
        where += " AND channel = ?"
        args += (channel,)
    pick = "min(CASE WHEN rn * 100 >= n * {p} THEN value END)"
    rows = conn.execute(
        f"WITH picked AS (SELECT {named}, {value} AS value, within_target, breached_at "
        f"FROM {source} WHERE {where}), "
        f"ranked AS (SELECT *, row_number() OVER (PARTITION BY {group} ORDER BY value) AS rn, "
        f"count(*) OVER (PARTITION BY {group}) AS n FROM picked) "
        f"SELECT {group}, count(*), avg(value), {pick.format(p=50)}, {pick.format(p=90)}, "
        f"{pick.format(p=99)}, avg(within_target), "
        "sum(within_target = 0 OR breached_at IS NOT NULL) "
        f"FROM ranked GROUP BY {group} ORDER BY {group}",
        args,
    ).fetchall()
    found = {}
    for row in rows:
        count, mean, p50, p90, p99, within, past = row[len(keys) :]
        found[tuple(str(k) for k in row[: len(keys)])] = Latencies(
            count=int(count),
            mean=float(mean),
            p50=float(p50),
            p90=float(p90),
            p99=float(p99),
            within_target=float(within),
            past_target=int(past),
        )
    return found


def met_stats(
    conn: sqlite3.Connection, since: float, until: float, channel: str | None, business: bool
) -> MetStats:
    """Everything a report needs of the answered clocks, in one read transaction."""
    value = _BUSINESS if business else _REAL
    conn.execute("BEGIN")
    try:
        channels = _latencies(conn, value, _BY_CHANNEL, since=since, until=until, channel=channel)
        days = _latencies(conn, value, _BY_DAY, since=since, until=until, channel=channel)
        customer = _latencies(
            conn,
            _CUSTOMER,
            _BY_CHANNEL,
            since=since,
            until=until,
            channel=channel,
            only=" AND customer_at IS NOT NULL",
        )
        reply = (
            channels
            if not business
            else _latencies(conn, _REAL, _BY_CHANNEL, since=since, until=until, channel=channel)
        )
        backend = _latencies(
            conn,
            "delivered_at - started_at",
            ("channel", "backend"),
            since=since,
            until=until,
            channel=channel,
            source=_DELIVERED,
        )
    finally:
        conn.execute("COMMIT")
    return MetStats(
        channels={k[0]: v for k, v in channels.items()},
        days={(k[0], k[1]): v for k, v in days.items()},
        customer_to_accepted={k[0]: v for k, v in customer.items()},
        accepted_to_reply={k[0]: v for k, v in reply.items()},
        accepted_to_backend={(k[0], k[1]): v for k, v in backend.items()},
    )


def waiting_clocks(
    conn: sqlite3.Connection, now: float, channel: str | None, limit: int
) -> dict[str, Waiting]:
    """Per channel: the running clocks counted, and the oldest `limit` of them (each a scan
    of the partial index on started_at), in one read transaction."""
    query = (
        "SELECT channel, count(*), sum(breached_at IS NOT NULL OR due_at <= ?) "
        "FROM first_response_clocks WHERE state = 'running'"
    )
    args: tuple[object, ...] = (now,)
    if channel is not None:
        query += " AND channel = ?"
        args += (channel,)
    conn.execute("BEGIN")
    try:
        counts = conn.execute(query + " GROUP BY channel ORDER BY channel", args).fetchall()
        found = {}
        for name, count, past in counts:
            oldest = conn.execute(
                f"SELECT {_COLUMNS} FROM first_response_clocks "
                "WHERE state = 'running' AND channel = ? ORDER BY started_at, id LIMIT ?",
                (name, limit),
            ).fetchall()
            found[str(name)] = Waiting(int(count), int(past), [_row(r) for r in oldest])
    finally:
        conn.execute("COMMIT")
    return found


class SqliteClocksTx:
    _conn: sqlite3.Connection

    async def latest_clock(self, conversation_id: str) -> ClockRow | None:
        row = self._conn.execute(_LATEST, (conversation_id,)).fetchone()
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
            row.start_event_id,
        )
        if row.id is None:
            cursor = self._conn.execute(_INSERT, values)
            row.id = int(cursor.lastrowid or 0)
            return
        self._conn.execute(_UPDATE, (*values, row.id))
