"""The mail side of a SQLite write transaction: raw mail, mailbox positions, attachments.

A mixin of `SqliteTx` (the Tx protocol), kept apart so each module owns one
concern; like the rest of it, these run on the writer connection and never
suspend.
"""

from __future__ import annotations

import sqlite3

from gateway.store import AutoAck, FailingMark, MailboxPosition

# A mark stands unless the address's contact group has an email from that address
# after it; events are found by contact (indexed), and only those few are parsed.
_FAILING = (
    "SELECT f.reason, f.status, f.failed_at, f.event_id FROM email_failures f "
    "WHERE f.address = :a AND NOT EXISTS (SELECT 1 FROM events e "
    "WHERE e.contact_id IN (SELECT id FROM contacts WHERE id = :s OR merged_into = :s) "
    "AND e.seq > f.seq AND e.type = 'helpline.message.inbound.v1' "
    "AND json_extract(CAST(e.body AS TEXT), '$.data.from.email') = f.address "
    "AND json_extract(CAST(e.body AS TEXT), '$.data.channel') = 'email' "
    "AND coalesce(json_extract(CAST(e.body AS TEXT), '$.data.sender_auth'), '') "
    "!= 'dmarc=fail')"
)


def failing_mark(conn: sqlite3.Connection, address: str) -> FailingMark | None:
    """The Tx protocol's `failing`, on any connection (the writer's or the reader's)."""
    owner = conn.execute(
        "SELECT coalesce(c.merged_into, c.id) FROM handles h JOIN contacts c "
        "ON c.id = h.contact_id WHERE h.kind = 'email' AND h.value = ?",
        (address,),
    ).fetchone()
    row = conn.execute(_FAILING, {"a": address, "s": owner[0] if owner else None}).fetchone()
    if row is None:
        return None
    return FailingMark(str(row[0]), row[1], float(row[2]), str(row[3]))


class SqliteMailTx:
    _conn: sqlite3.Connection

    async def attachment_bytes(self) -> int:
        return int(self._conn.execute("SELECT total(size) FROM attachments").fetchone()[0])

    async def has_attachment(self, sha256: str) -> bool:
        found = self._conn.execute("SELECT 1 FROM attachments WHERE sha256 = ?", (sha256,))
        return found.fetchone() is not None

    async def put_attachment(self, sha256: str, content_type: str, data: bytes, now: float) -> bool:
        cursor = self._conn.execute(
            "INSERT OR IGNORE INTO attachments (sha256, content_type, size, data, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (sha256, content_type, len(data), data, now),
        )
        return cursor.rowcount == 1

    async def ref_attachment(self, event_id: str, sha256: str) -> None:
        self._conn.execute(
            "INSERT OR IGNORE INTO attachment_refs (event_id, sha256) VALUES (?, ?)",
            (event_id, sha256),
        )

    async def drop_attachments_of(self, event_id: str) -> None:
        """Forget an event's attachments; content no other event uses goes with them."""
        gone = self._conn.execute(
            "SELECT sha256 FROM attachment_refs WHERE event_id = ?", (event_id,)
        ).fetchall()
        self._conn.execute("DELETE FROM attachment_refs WHERE event_id = ?", (event_id,))
        for (sha,) in gone:
            self._conn.execute(
                "DELETE FROM attachments WHERE sha256 = ? AND NOT EXISTS "
                "(SELECT 1 FROM attachment_refs WHERE sha256 = ?)",
                (sha, sha),
            )

    async def put_raw_mail(
        self,
        connector: str,
        now: float,
        mail_from: str | None,
        recipients: list[str],
        *,
        dedup_key: str,
        raw: bytes,
    ) -> int:
        cursor = self._conn.execute(
            "INSERT INTO raw_mail (connector, received_at, mail_from, recipients, dedup_key, raw) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (connector, now, mail_from, "\n".join(recipients), dedup_key, raw),
        )
        return int(cursor.lastrowid or 0)

    async def finish_raw_mail(
        self, raw_id: int, event_id: str | None, note: str | None = None
    ) -> None:
        self._conn.execute(
            "UPDATE raw_mail SET state = 'done', event_id = ?, error = ? WHERE id = ?",
            (event_id, note, raw_id),
        )

    async def fail_raw_mail(self, raw_id: int, error: str) -> None:
        self._conn.execute(
            "UPDATE raw_mail SET state = 'failed', error = ? WHERE id = ?", (error, raw_id)
        )

    async def expire_raw_mail(self, before: float, limit: int) -> int:
        return int(
            self._conn.execute(
                "DELETE FROM raw_mail WHERE id IN (SELECT id FROM raw_mail "
                "WHERE state = 'done' AND received_at < ? LIMIT ?)",
                (before, limit),
            ).rowcount
        )

    async def raw_mail_known(self, dedup_key: str) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM raw_mail WHERE dedup_key = ? LIMIT 1", (dedup_key,)
        ).fetchone()
        return row is not None

    async def put_mailbox_position(
        self, connector: str, position: MailboxPosition, now: float
    ) -> None:
        self._conn.execute(
            "INSERT INTO mailbox_positions "
            "(connector, mailbox, uidvalidity, uid, marked_uid, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (connector, mailbox) DO UPDATE SET "
            "uidvalidity = excluded.uidvalidity, uid = excluded.uid, "
            "marked_uid = excluded.marked_uid, updated_at = excluded.updated_at",
            (
                connector,
                position.mailbox,
                position.uidvalidity,
                position.uid,
                position.marked_uid,
                now,
            ),
        )

    async def mark_failing(self, address: str, mark: FailingMark, offset: int) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO email_failures "
            "(address, reason, status, failed_at, event_id, seq) VALUES (?, ?, ?, ?, ?, ?)",
            (address, mark.reason, mark.status, mark.since, mark.event_id, offset),
        )

    async def failing(self, address: str) -> FailingMark | None:
        return failing_mark(self._conn, address)

    async def last_auto_ack(self, address: str) -> AutoAck | None:
        row = self._conn.execute(
            "SELECT conversation_id, event_id, at FROM auto_acks WHERE address = ?", (address,)
        ).fetchone()
        return AutoAck(str(row[0]), str(row[1]), float(row[2])) if row else None

    async def put_auto_ack(
        self, address: str, conversation_id: str, event_id: str, now: float
    ) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO auto_acks (address, conversation_id, event_id, at) "
            "VALUES (?, ?, ?, ?)",
            (address, conversation_id, event_id, now),
        )
