"""The embedded store: one SQLite file in WAL mode, grouped commits, off-loop checkpoints.

Three connections, each with one job: the writer (statements on the event
loop, the COMMIT and its fsync on a dedicated thread, so the loop keeps
parsing requests while the disk syncs and those requests form the next
group), the reader (sees only committed data), and the checkpointer (on its
own thread on a schedule, because an auto-checkpoint inside a commit adds
~10 ms to that commit, TARGETS.md). `durability = "power"` syncs the WAL at
every commit (synchronous=FULL); `"process"` (NORMAL) survives a crash of the
process but may lose the last commits on power loss.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import structlog

from gateway.store import (
    ClockRow,
    ContactRow,
    ConversationRow,
    HandleRecord,
    MailboxPosition,
    MetStats,
    RawMail,
    StoreClosed,
    StoreHealth,
    UnitOfWork,
    Waiting,
)
from gateway.store import sqlite_clocks as clocks
from gateway.store.batching import Batcher
from gateway.store.migrate import migrate_sqlite
from gateway.store.recent_bands import Recent, RecentBands
from gateway.store.sqlite_delivery import SqliteDeliveryReads
from gateway.store.sqlite_mail import failing_mark
from gateway.store.sqlite_tx import (
    _CONVERSATION_COLUMNS,
    SqliteTx,
    conversation_from_row,
    unpack_bands,
)

T = TypeVar("T")
log = structlog.get_logger("gateway.store")


def _unchanged(value: None) -> None:
    return value


# pysqlite binds int, float and str directly, but passes None and bytes through its adapter
# protocol: two failed attribute lookups each, about 1 us a parameter on this project's
# machines, and an ingest binds a dozen. An adapter registered for the exact type is found
# at once; these two bind the value unchanged.
sqlite3.register_adapter(type(None), _unchanged)
sqlite3.register_adapter(bytes, bytes)


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: keeps the hot index pages in memory
    # Savepoint journals in memory, not in a temp file: ~150 KB of writes per message
    # otherwise. Crash recovery never reads them (the WAL is what makes a commit durable).
    conn.execute("PRAGMA temp_store = MEMORY")
    return conn


class _SqliteEngine:
    """The writer's transaction, and the in-memory band index that follows it."""

    def __init__(
        self, conn: sqlite3.Connection, executor: ThreadPoolExecutor, bands: RecentBands
    ) -> None:
        self._conn = conn
        self._executor = executor
        self._bands = bands
        self.tx = SqliteTx(conn, bands)

    def begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")
        self._bands.begin()

    def savepoint(self) -> None:
        self._conn.execute("SAVEPOINT unit")
        self._bands.savepoint()

    def release(self) -> None:
        self._conn.execute("RELEASE unit")

    def rollback_to_savepoint(self) -> None:
        self._conn.execute("ROLLBACK TO unit")
        self._bands.rollback_to_savepoint()

    async def commit(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._conn.execute, "COMMIT")
        self._bands.committed()

    def rollback(self) -> None:
        self._bands.rolled_back()
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def is_fatal(self, err: BaseException) -> bool:
        # I/O and full-disk errors may have rolled back the whole transaction.
        return isinstance(err, sqlite3.OperationalError | sqlite3.DatabaseError) and not (
            isinstance(err, sqlite3.IntegrityError)
        )


class SqliteStore:
    def __init__(
        self,
        path: Path,
        *,
        durability: str = "power",
        max_pending: int = 2000,
        max_batch: int = 256,
        checkpoint_interval: float = 1.0,
        recent_bands: int = 20_000,
        on_commit: Callable[[int], None] | None = None,
        on_batch: Callable[[float, int], None] | None = None,
    ) -> None:
        self.path = path
        self._durability = durability
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._checkpoint_interval = checkpoint_interval
        self._bands = RecentBands(recent_bands)
        self._on_commit = on_commit
        self._on_batch = on_batch
        self._commit_thread = ThreadPoolExecutor(1, thread_name_prefix="helpline-commit")
        self._checkpoint_thread = ThreadPoolExecutor(1, thread_name_prefix="helpline-ckpt")
        self._head = 0
        self._closed = False
        self._writer: sqlite3.Connection
        self._reader: sqlite3.Connection
        self.delivery: SqliteDeliveryReads
        self._checkpointer: sqlite3.Connection
        self._batcher: Batcher[SqliteTx]
        self._checkpoint_task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Create or migrate the file; returns once writes can be taken."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        synchronous = "FULL" if self._durability == "power" else "NORMAL"
        self._writer = _connect(self.path, synchronous)
        migrate_sqlite(self._writer)
        self._reader = _connect(self.path, synchronous)
        self._reader.execute("PRAGMA query_only = 1")
        self.delivery = SqliteDeliveryReads(self._reader)
        self._checkpointer = _connect(self.path, synchronous)
        self._head = self._read_head(self._writer)
        self._load_bands()
        engine = _SqliteEngine(self._writer, self._commit_thread, self._bands)
        self._batcher = Batcher(
            engine,
            max_pending=self._max_pending,
            max_batch=self._max_batch,
            on_commit=self._committed,
        )
        self._batcher.start()
        self._checkpoint_task = asyncio.create_task(self._checkpoint_loop(), name="store-ckpt")
        log.info(
            "store.opened", path=str(self.path), durability=self._durability, head_offset=self._head
        )

    def _load_bands(self) -> None:
        """The newest fingerprints' keys back into memory, oldest first."""
        rows = self._writer.execute(
            "SELECT at, event_id, contact_id, anonymous, bands FROM fingerprints "
            "WHERE bands IS NOT NULL ORDER BY at DESC LIMIT ?",
            (self._bands.max_entries,),
        ).fetchall()
        for at, event, contact, anonymous, bands in reversed(rows):
            recent = Recent(
                float(at), str(event), str(contact), bool(anonymous), unpack_bands(bands)
            )
            self._bands.add(recent, staged=False)

    @staticmethod
    def _read_head(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return int(row[0]) if row else 0

    def _committed(self, seconds: float, size: int) -> None:
        head = self._read_head(self._writer)
        if self._on_batch is not None:
            self._on_batch(seconds, size)
        if head != self._head:
            self._head = head
            if self._on_commit is not None:
                self._on_commit(head)

    async def write(self, unit: UnitOfWork[T]) -> T:
        if self._closed:
            raise StoreClosed("the store is closed")
        return await self._batcher.submit(unit)

    def head_offset(self) -> int:
        return self._head

    async def read_stream(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        rows = self._reader.execute(
            "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
        ).fetchall()
        return [(int(seq), bytes(body)) for seq, body in rows]

    async def list_conversations(
        self, status: str | None, channel: str | None, before: int | None, limit: int
    ) -> list[ConversationRow]:
        clauses, params = ["number < ?"], [before if before is not None else 2**62]
        if status:
            clauses.append("status = ?")
            params.append(status)  # type: ignore[arg-type]
        if channel:
            clauses.append("(',' || channels || ',') LIKE ?")
            params.append(f"%,{channel},%")  # type: ignore[arg-type]
        rows = self._reader.execute(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE {' AND '.join(clauses)} "
            "ORDER BY number DESC LIMIT ?",
            (*params, limit),
        ).fetchall()
        return [conversation_from_row(row) for row in rows]

    async def get_conversation(self, conversation_id: str) -> ConversationRow | None:
        row = self._reader.execute(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = ?", (conversation_id,)
        ).fetchone()
        return conversation_from_row(row) if row else None

    async def conversation_events(
        self, conversation_id: str, after: int, limit: int
    ) -> list[tuple[int, bytes]]:
        rows = self._reader.execute(
            "SELECT seq, body FROM events WHERE conversation_id = ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (conversation_id, after, limit),
        ).fetchall()
        return [(int(seq), bytes(body)) for seq, body in rows]

    async def get_contact(self, contact_id: str) -> ContactRow | None:
        """A contact as the survivor of its merge group: every handle, every merged id."""
        row = self._reader.execute(
            "SELECT coalesce(merged_into, id) FROM contacts WHERE id = ?", (contact_id,)
        ).fetchone()
        if row is None:
            return None
        survivor = str(row[0])
        head = self._reader.execute(
            "SELECT name, created_at, erased_at FROM contacts WHERE id = ?", (survivor,)
        ).fetchone()
        group = {"c": survivor}
        handles = self._reader.execute(
            "SELECT kind, value, contact_id, created_at, cause_event, verified FROM handles "
            "WHERE contact_id IN (SELECT id FROM contacts WHERE id = :c OR merged_into = :c) "
            "ORDER BY kind, value",
            group,
        ).fetchall()
        merged = self._reader.execute(
            "SELECT id FROM contacts WHERE merged_into = :c ORDER BY created_at, id", group
        ).fetchall()
        return ContactRow(
            id=survivor,
            name=head[0],
            merged_into=None,
            created_at=float(head[1]),
            handles=tuple(
                HandleRecord(
                    str(k),
                    str(v),
                    str(c),
                    float(at),
                    cause,
                    bool(verified),
                    failing_mark(self._reader, str(v)) if k == "email" else None,
                )
                for k, v, c, at, cause, verified in handles
            ),
            merged=tuple(str(m[0]) for m in merged),
            erased_at=float(head[2]) if head[2] is not None else None,
        )

    async def contact_by_handle(self, kind: str, value: str) -> str | None:
        row = self._reader.execute(
            "SELECT coalesce(c.merged_into, c.id) FROM handles h JOIN contacts c "
            "ON c.id = h.contact_id WHERE h.kind = ? AND h.value = ?",
            (kind, value),
        ).fetchone()
        return str(row[0]) if row else None

    async def pending_raw_mail(self, connector: str, after: int, limit: int) -> list[RawMail]:
        rows = self._reader.execute(
            "SELECT id, connector, received_at, mail_from, recipients, dedup_key, raw "
            "FROM raw_mail WHERE connector = ? AND state = 'pending' AND id > ? "
            "ORDER BY id LIMIT ?",
            (connector, after, limit),
        ).fetchall()
        return [
            RawMail(int(i), str(c), float(at), frm, tuple(str(r).split("\n")), str(k), bytes(b))
            for i, c, at, frm, r, k, b in rows
        ]

    async def mailbox_position(self, connector: str, mailbox: str) -> MailboxPosition | None:
        row = self._reader.execute(
            "SELECT uidvalidity, uid, marked_uid FROM mailbox_positions "
            "WHERE connector = ? AND mailbox = ?",
            (connector, mailbox),
        ).fetchone()
        return MailboxPosition(mailbox, int(row[0]), int(row[1]), int(row[2])) if row else None

    async def due_clocks(self, now: float, limit: int) -> list[ClockRow]:
        return clocks.due_clocks(self._reader, now, limit)

    async def next_due(self) -> float | None:
        return clocks.next_due(self._reader)

    async def running_clocks(self) -> list[tuple[int, str, float]]:
        return clocks.running_clocks(self._reader)

    async def met_stats(
        self, since: float, until: float, channel: str | None, business: bool
    ) -> MetStats:
        """Aggregated off the loop (a long period sorts many clocks), on the checkpoint
        thread's connection, as idempotency_stats is."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._checkpoint_thread,
            clocks.met_stats,
            self._checkpointer,
            since,
            until,
            channel,
            business,
        )

    async def waiting_clocks(
        self, now: float, channel: str | None, limit: int
    ) -> dict[str, Waiting]:
        return clocks.waiting_clocks(self._reader, now, channel, limit)

    async def get_attachment(self, sha256: str) -> tuple[str, bytes] | None:
        row = self._reader.execute(
            "SELECT content_type, data FROM attachments WHERE sha256 = ?", (sha256,)
        ).fetchone()
        return (str(row[0]), bytes(row[1])) if row else None

    async def get_cursor(self, name: str) -> int | None:
        row = self._reader.execute("SELECT seq FROM cursors WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else None

    async def expire_idempotency(self, older_than: float) -> int:
        async def unit(tx: object) -> int:
            cursor = self._writer.execute(
                "DELETE FROM idempotency WHERE created_at < ?", (older_than,)
            )
            return int(cursor.rowcount)

        return await self.write(unit)

    async def idempotency_stats(self) -> tuple[int, float | None]:
        """How many keys are remembered and the oldest one's time; counted off the loop."""

        def count() -> tuple[int, float | None]:
            row = self._checkpointer.execute(
                "SELECT count(*), min(created_at) FROM idempotency"
            ).fetchone()
            return int(row[0]), (float(row[1]) if row[1] is not None else None)

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._checkpoint_thread, count)

    def health(self) -> StoreHealth:
        return StoreHealth(
            writable=not self._closed and self._batcher.last_error is None,
            last_error=self._batcher.last_error,
            pending=self._batcher.pending,
            head_offset=self._head,
        )

    def _checkpoint(self) -> None:
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    async def _checkpoint_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._checkpoint_interval)
            try:
                await loop.run_in_executor(self._checkpoint_thread, self._checkpoint)
            except sqlite3.Error as err:
                log.warning("store.checkpoint_failed", error=str(err))

    async def close(self) -> None:
        """Commit what was accepted, checkpoint the WAL into the file, close."""
        if self._closed:
            return
        await self._batcher.close()
        self._closed = True
        if self._checkpoint_task is not None:
            self._checkpoint_task.cancel()
            await asyncio.gather(self._checkpoint_task, return_exceptions=True)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(
                self._checkpoint_thread,
                lambda: self._checkpointer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone(),
            )
        except sqlite3.Error as err:
            log.warning("store.checkpoint_failed", error=str(err))
        for conn in (self._reader, self._checkpointer, self._writer):
            conn.close()
        self._commit_thread.shutdown(wait=True)
        self._checkpoint_thread.shutdown(wait=True)
        log.info("store.closed", path=str(self.path), head_offset=self._head)
