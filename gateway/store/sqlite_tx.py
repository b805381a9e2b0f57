"""The write operations of one grouped SQLite transaction (the Tx protocol).

They run on the event loop against the writer connection; only the commit
leaves the loop. Methods are `async` to share the protocol with engines whose
driver is asynchronous; here they never suspend.
"""

from __future__ import annotations

import sqlite3
import struct

from gateway.events import Event
from gateway.store import ConversationRow, Handle, IdempotencyRecord
from gateway.store.recent_bands import Recent, RecentBands
from gateway.store.sqlite_clocks import SqliteClocksTx
from gateway.store.sqlite_delivery import SqliteDeliveryTx
from gateway.store.sqlite_mail import SqliteMailTx

_CONVERSATION_COLUMNS = (
    "id, number, contact_id, status, channel, channels, created_at, last_activity_at, "
    "resolved_at, previous_id"
)
# A contact and every contact merged into it.
_GROUP = "(SELECT id FROM contacts WHERE id = :c OR merged_into = :c)"


def conversation_from_row(row: tuple[object, ...]) -> ConversationRow:
    channels = str(row[5])
    return ConversationRow(
        id=str(row[0]),
        number=int(row[1]),  # type: ignore[call-overload]
        contact_id=str(row[2]),
        status=str(row[3]),
        channel=str(row[4]),
        channels=channels.split(",") if channels else [],
        created_at=float(row[6]),  # type: ignore[arg-type]
        last_activity_at=float(row[7]),  # type: ignore[arg-type]
        resolved_at=float(row[8]) if row[8] is not None else None,  # type: ignore[arg-type]
        previous_id=str(row[9]) if row[9] is not None else None,
    )


def pack_bands(bands: list[int]) -> bytes:
    return struct.pack(f"<{len(bands)}I", *bands)


def unpack_bands(blob: bytes) -> tuple[int, ...]:
    return struct.unpack(f"<{len(blob) // 4}I", blob)


class SqliteTx(SqliteMailTx, SqliteClocksTx, SqliteDeliveryTx):
    def __init__(self, conn: sqlite3.Connection, bands: RecentBands) -> None:
        self._conn = conn
        self.bands = bands

    async def get_idempotency(self, scope: str, key: str) -> IdempotencyRecord | None:
        row = self._conn.execute(
            "SELECT digest, response, created_at FROM idempotency WHERE scope = ? AND key = ?",
            (scope, key),
        ).fetchone()
        return IdempotencyRecord(bytes(row[0]), bytes(row[1]), float(row[2])) if row else None

    async def put_idempotency(
        self, scope: str, key: str, digest: bytes, response: bytes, now: float
    ) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO idempotency (scope, key, digest, response, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (scope, key, digest, response, now),
        )

    async def contacts_for_handles(self, handles: list[Handle]) -> dict[Handle, str]:
        found: dict[Handle, str] = {}
        for kind, value in handles:
            row = self._conn.execute(
                "SELECT coalesce(c.merged_into, c.id) FROM handles h "
                "JOIN contacts c ON c.id = h.contact_id WHERE h.kind = ? AND h.value = ?",
                (kind, value),
            ).fetchone()
            if row:
                found[(kind, value)] = str(row[0])
        return found

    async def create_contact(self, contact_id: str, name: str | None, now: float) -> None:
        self._conn.execute(
            "INSERT INTO contacts (id, name, created_at) VALUES (?, ?, ?)",
            (contact_id, name, now),
        )

    async def add_handle(
        self,
        contact_id: str,
        handle: Handle,
        now: float,
        cause_event: str | None = None,
        verified: bool = False,
    ) -> None:
        self._conn.execute(
            "INSERT INTO handles (kind, value, contact_id, created_at, cause_event, verified) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (handle[0], handle[1], contact_id, now, cause_event, int(verified)),
        )

    async def contacts_created(self, contact_ids: list[str]) -> dict[str, float]:
        marks = ",".join("?" * len(contact_ids))
        rows = self._conn.execute(
            f"SELECT id, created_at FROM contacts WHERE id IN ({marks})", contact_ids
        ).fetchall()
        return {str(cid): float(at) for cid, at in rows}

    async def group_handles(self, contact_id: str) -> list[Handle]:
        rows = self._conn.execute(
            f"SELECT kind, value FROM handles WHERE contact_id IN {_GROUP} ORDER BY kind, value",
            {"c": contact_id},
        ).fetchall()
        return [(str(k), str(v)) for k, v in rows]

    async def merge_contact(
        self, merged: str, survivor: str, cause_event: str | None, evidence: str, now: float
    ) -> None:
        # Path compression: whatever pointed at `merged` points at the survivor now.
        self._conn.execute(
            "UPDATE contacts SET merged_into = ? WHERE id = ? OR merged_into = ?",
            (survivor, merged, merged),
        )
        self._conn.execute(
            "INSERT INTO merges (merged, survivor, cause_event, evidence, at) "
            "VALUES (?, ?, ?, ?, ?)",
            (merged, survivor, cause_event, evidence, now),
        )

    async def split_contact(self, contact_id: str, now: float) -> str | None:
        row = self._conn.execute(
            "SELECT id, survivor FROM merges WHERE merged = ? AND undone_at IS NULL "
            "ORDER BY id DESC LIMIT 1",
            (contact_id,),
        ).fetchone()
        if row is None:
            return None
        self._conn.execute("UPDATE merges SET undone_at = ? WHERE id = ?", (now, row[0]))
        self._conn.execute("UPDATE contacts SET merged_into = NULL WHERE id = ?", (contact_id,))
        # Contacts that had been merged into this one come back with it.
        self._conn.execute(
            "UPDATE contacts SET merged_into = ? WHERE id IN "
            "(SELECT merged FROM merges WHERE survivor = ? AND undone_at IS NULL)",
            (contact_id, contact_id),
        )
        return str(row[1])

    async def contact_group_ids(self, contact_id: str) -> list[str]:
        """The survivor of the contact's merge group first, then every contact merged into it."""
        row = self._conn.execute(
            "SELECT coalesce(merged_into, id) FROM contacts WHERE id = ?", (contact_id,)
        ).fetchone()
        if row is None:
            return []
        survivor = str(row[0])
        merged = self._conn.execute(
            "SELECT id FROM contacts WHERE merged_into = ? ORDER BY created_at, id", (survivor,)
        ).fetchall()
        return [survivor, *(str(m[0]) for m in merged)]

    async def events_of_contacts(self, contact_ids: list[str]) -> list[tuple[int, bytes]]:
        marks = ",".join("?" * len(contact_ids))
        rows = self._conn.execute(
            f"SELECT seq, body FROM events WHERE contact_id IN ({marks}) AND erased = 0 "
            "ORDER BY seq",
            contact_ids,
        ).fetchall()
        return [(int(seq), bytes(body)) for seq, body in rows]

    async def replace_event_body(self, seq: int, body: bytes) -> None:
        self._conn.execute("UPDATE events SET body = ?, erased = 1 WHERE seq = ?", (body, seq))

    async def erase_contacts(self, contact_ids: list[str], now: float) -> None:
        marks = ",".join("?" * len(contact_ids))
        for table in ("email_failures", "auto_acks"):
            self._conn.execute(
                f"DELETE FROM {table} WHERE address IN (SELECT value FROM handles "
                f"WHERE kind = 'email' AND contact_id IN ({marks}))",
                contact_ids,
            )
        self._conn.execute(
            "DELETE FROM raw_mail WHERE event_id IN "
            f"(SELECT id FROM events WHERE contact_id IN ({marks}))",
            contact_ids,
        )
        self._conn.execute(f"DELETE FROM handles WHERE contact_id IN ({marks})", contact_ids)
        self._conn.execute(
            f"UPDATE contacts SET name = NULL, erased_at = ? WHERE id IN ({marks})",
            (now, *contact_ids),
        )
        self._conn.execute(
            "DELETE FROM thread_refs WHERE conversation_id IN "
            f"(SELECT id FROM conversations WHERE contact_id IN ({marks}))",
            contact_ids,
        )
        self._conn.execute(f"DELETE FROM fingerprints WHERE contact_id IN ({marks})", contact_ids)
        self.bands.forget_contacts(set(contact_ids))

    async def events_after(
        self, after: int, limit: int
    ) -> list[tuple[int, float, str, bool, bytes]]:
        rows = self._conn.execute(
            "SELECT seq, time, type, erased, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        ).fetchall()
        return [(int(s), float(t), str(k), bool(e), bytes(b)) for s, t, k, e, b in rows]

    async def stream_after(
        self, after: int, limit: int
    ) -> list[tuple[int, str, str | None, bytes]]:
        return self._conn.execute(
            "SELECT seq, type, conversation_id, body FROM events WHERE seq > ? ORDER BY seq "
            "LIMIT ?",
            (after, limit),
        ).fetchall()

    async def recent_fingerprints(
        self, contact_id: str, since: float, limit: int
    ) -> list[tuple[str, bytes]]:
        rows = self._conn.execute(
            f"SELECT event_id, sketch FROM fingerprints WHERE contact_id IN {_GROUP} "
            "AND at >= :since ORDER BY at DESC LIMIT :limit",
            {"c": contact_id, "since": since, "limit": limit},
        ).fetchall()
        return [(str(e), bytes(s)) for e, s in rows]

    async def band_candidates(
        self, bands: list[int], since: float, contact_id: str, anonymous_only: bool, limit: int
    ) -> list[tuple[str, str, bool, bytes]]:
        """Recent fingerprints of other contacts sharing a band key (or only anonymous ones)."""

        def group() -> set[str]:
            rows = self._conn.execute(
                "SELECT id FROM contacts WHERE id = ? OR merged_into = ?", (contact_id, contact_id)
            ).fetchall()
            return {contact_id, *(str(r[0]) for r in rows)}

        found = self.bands.find(bands, since, anonymous_only, limit, group)
        if not found:
            return []
        marks = ",".join("?" * len(found))
        sketches = dict(
            self._conn.execute(
                f"SELECT event_id, sketch FROM fingerprints WHERE event_id IN ({marks})",
                [e.event_id for e in found],
            ).fetchall()
        )
        return [
            (e.event_id, e.contact_id, e.anonymous, bytes(sketches[e.event_id]))
            for e in found
            if e.event_id in sketches
        ]

    async def put_fingerprint(
        self,
        event_id: str,
        contact_id: str,
        *,
        at: float,
        sketch: bytes,
        bands: list[int],
        anonymous: bool,
    ) -> None:
        keys = list(dict.fromkeys(bands))
        cursor = self._conn.execute(
            "INSERT OR IGNORE INTO fingerprints (event_id, contact_id, at, sketch, anonymous, "
            "bands) VALUES (?, ?, ?, ?, ?, ?)",
            (event_id, contact_id, at, sketch, int(anonymous), pack_bands(keys) if keys else None),
        )
        if keys and cursor.rowcount == 1:
            self.bands.add(Recent(at, event_id, contact_id, anonymous, tuple(keys)))

    async def forget_fingerprints(self, before: float) -> int:
        self.bands.forget_before(before)
        return int(self._conn.execute("DELETE FROM fingerprints WHERE at < ?", (before,)).rowcount)

    async def get_cursor(self, name: str) -> int | None:
        row = self._conn.execute("SELECT seq FROM cursors WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else None

    async def first_suggestion(self, a: str, b: str, cause_event: str, now: float) -> bool:
        """Record a suggested link once per pair; True the first time."""
        low, high = sorted((a, b))
        cursor = self._conn.execute(
            "INSERT OR IGNORE INTO link_suggestions (a, b, cause_event, at) VALUES (?, ?, ?, ?)",
            (low, high, cause_event, now),
        )
        return cursor.rowcount == 1

    async def conversation_by_thread(self, kind: str, ref: str) -> ConversationRow | None:
        row = self._conn.execute(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = "
            "(SELECT conversation_id FROM thread_refs WHERE kind = ? AND ref = ?)",
            (kind, ref),
        ).fetchone()
        return conversation_from_row(row) if row else None

    async def conversation_by_number(self, number: int) -> ConversationRow | None:
        row = self._conn.execute(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE number = ?", (number,)
        ).fetchone()
        return conversation_from_row(row) if row else None

    async def put_thread(self, kind: str, ref: str, conversation_id: str, now: float) -> None:
        self._conn.execute(
            "INSERT OR IGNORE INTO thread_refs (kind, ref, conversation_id, created_at) "
            "VALUES (?, ?, ?, ?)",
            (kind, ref, conversation_id, now),
        )

    async def latest_conversation(self, contact_id: str) -> ConversationRow | None:
        row = self._conn.execute(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE contact_id IN {_GROUP} "
            "ORDER BY last_activity_at DESC LIMIT 1",
            {"c": contact_id},
        ).fetchone()
        return conversation_from_row(row) if row else None

    async def get_conversation(self, conversation_id: str) -> ConversationRow | None:
        row = self._conn.execute(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = ?",
            (conversation_id,),
        ).fetchone()
        return conversation_from_row(row) if row else None

    async def create_conversation(
        self,
        conversation_id: str,
        contact_id: str,
        channel: str,
        now: float,
        previous_id: str | None = None,
    ) -> ConversationRow:
        cursor = self._conn.execute(
            "INSERT INTO conversations (id, contact_id, status, channel, channels, created_at, "
            "last_activity_at, previous_id) VALUES (?, ?, 'open', ?, ?, ?, ?, ?)",
            (conversation_id, contact_id, channel, channel, now, now, previous_id),
        )
        return ConversationRow(
            id=conversation_id,
            number=int(cursor.lastrowid or 0),
            contact_id=contact_id,
            status="open",
            channel=channel,
            channels=[channel],
            created_at=now,
            last_activity_at=now,
            resolved_at=None,
            previous_id=previous_id,
        )

    async def save_conversation(self, row: ConversationRow) -> None:
        self._conn.execute(
            "UPDATE conversations SET status = ?, channels = ?, last_activity_at = ?, "
            "resolved_at = ? WHERE id = ?",
            (row.status, ",".join(row.channels), row.last_activity_at, row.resolved_at, row.id),
        )

    async def append(self, event: Event) -> int:
        cursor = self._conn.execute(
            "INSERT INTO events (id, type, conversation_id, contact_id, time, body) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                event.id,
                event.type.value,
                event.conversation_id,
                event.contact_id,
                event.time.timestamp(),
                event.envelope_json(),
            ),
        )
        return int(cursor.lastrowid or 0)

    async def set_cursor(self, name: str, offset: int, now: float) -> None:
        self._conn.execute(
            "INSERT INTO cursors (name, seq, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at",
            (name, offset, now),
        )
