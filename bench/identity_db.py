"""Pre-populated stores for the `identity` benchmark: N contacts with history, cached.

Each stored contact i has what a real ingest of its first message leaves
behind (gateway/ingest.py): a contacts row, its email handle
`user{i}@stored.example`, one open `api` conversation, two events
(conversation.opened and a ~1 KB message.inbound, real CloudEvent envelopes
built once with gateway.events and reused with each row's ids) and one
idempotency row, and (schema 4 and later) the message's near-duplicate
fingerprint. The schema comes from the daemon's own migrations; the rows
are written directly with sqlite3 in one transaction (executemany over
generators, synchronous=OFF and a big page cache during the load only).

Times are epoch floats spread over the 6 hours before the build, so every
stored conversation is inside the default reopen window (7 days), every
idempotency row inside the idempotency window (7 days) and every fingerprint
inside the near-duplicate window (1 day) while the cache is used: a cached
database older than MAX_AGE_SECONDS (12 hours) is rebuilt. The cache lives in
/tmp/helpline-bench-cache/, keyed by N, the schema version (PRAGMA
user_version) and LAYOUT; a run copies the file, never uses it in place.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from gateway.events import ConversationChange, Event, EventType, InboundMessage, Sender
from gateway.store.migrate import latest_version, migrate_sqlite

CACHE_DIR = Path(tempfile.gettempdir()) / "helpline-bench-cache"  # /tmp/helpline-bench-cache
LAYOUT = 2  # bump when the generated rows change, so old cached files are not reused
MAX_AGE_SECONDS = 12 * 3600.0  # stored activity must stay inside the 1-day and 7-day windows
SPREAD_SECONDS = 6 * 3600.0  # stored activity spans the 6 hours before the build
STORED_DOMAIN = "stored.example"
TOKEN_NAME = "bench"  # bench.daemon.TOKEN_NAME: idempotency rows are scoped to it
SOURCE = f"/api/{TOKEN_NAME}"
DB_NAME = "helpline.db"  # what the daemon opens in its state dir (gateway.store.sqlite_path)

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32, as gateway.ids
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_TAIL_TABLE = bytes(ord(_ALPHABET[b & 31]) for b in range(256))

FIRST = ("Anna", "Ben", "Chiara", "Dmitri", "Elif", "Farid", "Grace", "Hiro")
LAST = ("Schmidt", "Okafor", "Rossi", "Ivanova", "Yilmaz", "Haddad", "Lee", "Tanaka", "Costa")
SUBJECTS = (
    "Order {n} has not arrived",
    "Refund for order {n}",
    "Cannot log in since yesterday ({n})",
)
TEXTS = (
    "Hello, I ordered item {n} on the 3rd and it still has not arrived. The tracking page "
    "says the parcel left the warehouse but nothing has changed for four days now. Could you "
    "check what happened and tell me when I can expect it? I have been a customer for years "
    "and this never happened before, so I am a bit worried that the parcel got lost or was "
    "delivered to a neighbour. If it is lost, please send a replacement or refund the order; "
    "I would prefer the replacement. My customer number is {n}. Thank you, {name}",
    "Hi there, I returned the package for order {n} two weeks ago and the refund is still not "
    "on my card. The courier confirmed the delivery to your warehouse on the 12th and I have "
    "the receipt with the tracking number if you need it. Your website says refunds take five "
    "working days, so something must have gone wrong on the way. Could you please look into "
    "it and let me know how long it usually takes? Reference {n}. Best regards, {name}",
    "Good morning, since yesterday I cannot log in to my account (ticket {n}). The reset link "
    "in the email says it has expired even when I click it right away. I tried two browsers, "
    "cleared the cache and cookies, and also tried from my phone on mobile data, with the "
    "same result every time. I need to download last month's invoices for my accountant "
    "before Friday. Could someone reset it for me or tell me what else to try? Account {n}. "
    "Thanks a lot, {name}",
)


def email_of(i: int) -> str:
    """Stored contact i's (normalized) email; bench/identity.lua writes the same formula."""
    return f"user{i}@{STORED_DOMAIN}"


def name_of(i: int) -> str:
    return f"{FIRST[i % len(FIRST)]} {LAST[(i * 7) % len(LAST)]}"


def _time_part(ms: int) -> str:
    """The 10 leading characters of a gateway id: the 48-bit millisecond time."""
    return "".join([_PAIRS[(ms >> s) & 1023] for s in (40, 30, 20, 10, 0)])


def _random_tails(count: int) -> str:
    """`count` random 16-character id tails (80 bits each), from one read of os.urandom."""
    return os.urandom(16 * count).translate(_TAIL_TABLE).decode("ascii")


@dataclass(frozen=True)
class Templates:
    """The stored envelopes as %-format strings with named slots."""

    opened: str
    inbound: str


_SLOTS = {
    "evt_ZZEVTZZ": "%(evt)s",
    "conv_ZZCONVZZ": "%(conv)s",
    "ct_ZZCTZZ": "%(ct)s",
    "ZZEMAILZZ@stored.example": "%(email)s",
    "ZZNAMEZZ": "%(name)s",
    "ZZSUBJECTZZ": "%(subject)s",
    "ZZTEXTZZ": "%(text)s",
    "2001-01-01T00:00:00.000Z": "%(time)s",
    "987654321": "%(number)d",
}


def _templatize(envelope: bytes) -> str:
    text = envelope.decode("utf-8").replace("%", "%%")
    for marker, slot in _SLOTS.items():
        text = text.replace(marker, slot)
    return text


def templates() -> Templates:
    """Real envelopes from gateway.events with marker values, turned into format strings."""
    when = datetime(2001, 1, 1, tzinfo=UTC)
    common = {"conversation_id": "conv_ZZCONVZZ", "contact_id": "ct_ZZCTZZ"}
    opened = Event(
        id="evt_ZZEVTZZ",
        type=EventType.CONVERSATION_OPENED,
        source=SOURCE,
        time=when,
        subject="conv_ZZCONVZZ",
        conversation_id="conv_ZZCONVZZ",
        contact_id="ct_ZZCTZZ",
        data=ConversationChange(
            **common, conversation_number=987654321, channel="api", status="open"
        ),
    )
    inbound = Event(
        id="evt_ZZEVTZZ",
        type=EventType.MESSAGE_INBOUND,
        source=SOURCE,
        time=when,
        subject="conv_ZZCONVZZ",
        conversation_id="conv_ZZCONVZZ",
        contact_id="ct_ZZCTZZ",
        data=InboundMessage(
            **common,
            channel="api",
            conversation_number=987654321,
            sender=Sender(email="ZZEMAILZZ@stored.example", name="ZZNAMEZZ"),
            subject="ZZSUBJECTZZ",
            text="ZZTEXTZZ",
            accepted_at=when,
        ),
    )
    return Templates(_templatize(opened.envelope_json()), _templatize(inbound.envelope_json()))


def _stamp(ms: int, days: dict[int, str]) -> str:
    """rfc3339 of an epoch millisecond (what gateway.times writes), without a datetime per row."""
    seconds, milli = divmod(ms, 1000)
    day, rest = divmod(seconds, 86400)
    date = days.get(day)
    if date is None:
        date = days[day] = datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d")
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{date}T{hours:02d}:{minutes:02d}:{secs:02d}.{milli:03d}Z"


@dataclass(frozen=True)
class Prepared:
    """A cached database ready to copy, and how it came to be."""

    n: int
    path: Path
    schema_version: int
    built_at: float
    build_seconds: float
    size_bytes: int
    reused: bool

    def as_json(self) -> dict[str, object]:
        return {
            "stored_contacts": self.n,
            "cache_file": str(self.path),
            "schema_version": self.schema_version,
            "built_at": round(self.built_at, 1),
            "build_seconds": round(self.build_seconds, 2),
            "size_bytes": self.size_bytes,
            "reused_from_cache": self.reused,
        }


FINGERPRINT_POOL = 48  # distinct stored texts whose sketches are computed (100 µs each)


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return found is not None


def _sketches(pool: int) -> list[bytes]:
    """Near-duplicate fingerprints of stored-looking texts, as gateway/near_duplicates.py keeps.

    Computing one per stored message would add ~100 s at 10^6, so a pool of real
    sketches of the same texts (other refs and names) is reused: every lookup and
    comparison costs the same as with each message's own sketch.
    """
    # Imported here: gateway.similarity exists only from schema 4 on.
    from gateway.similarity import fingerprint

    out = []
    for i in range(pool):
        name = name_of(i)
        fp = fingerprint(TEXTS[i % len(TEXTS)].format(n=f"{i * 7919:07d}", name=name))
        if fp is not None:
            out.append(fp.to_bytes())
    return out


@dataclass
class _Batch:
    """Rows of each table waiting for one executemany."""

    contacts: list[tuple[object, ...]] = field(default_factory=list)
    handles: list[tuple[object, ...]] = field(default_factory=list)
    conversations: list[tuple[object, ...]] = field(default_factory=list)
    events: list[tuple[object, ...]] = field(default_factory=list)
    idem: list[tuple[object, ...]] = field(default_factory=list)
    prints: list[tuple[object, ...]] = field(default_factory=list)

    def flush(self, conn: sqlite3.Connection) -> None:
        conn.executemany(
            "INSERT INTO contacts (id, name, created_at) VALUES (?, ?, ?)", self.contacts
        )
        conn.executemany(
            "INSERT INTO handles (kind, value, contact_id, created_at, cause_event, verified) "
            "VALUES ('email', ?, ?, ?, ?, 0)",
            self.handles,
        )
        conn.executemany(
            "INSERT INTO conversations (number, id, contact_id, status, channel, channels, "
            "created_at, last_activity_at) VALUES (?, ?, ?, 'open', 'api', 'api', ?, ?)",
            self.conversations,
        )
        conn.executemany(
            "INSERT INTO events (seq, id, type, conversation_id, contact_id, time, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            self.events,
        )
        conn.executemany(
            "INSERT INTO idempotency (scope, key, digest, response, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            self.idem,
        )
        if self.prints:
            conn.executemany(
                "INSERT INTO fingerprints (event_id, contact_id, at, sketch) VALUES (?, ?, ?, ?)",
                self.prints,
            )
        for rows in (
            self.contacts,
            self.handles,
            self.conversations,
            self.events,
            self.idem,
            self.prints,
        ):
            rows.clear()


def _insert_all(conn: sqlite3.Connection, n: int, start: float) -> None:
    tpl = templates()
    # Schema 4 and later keep a fingerprint of each message within [near_duplicates] window
    # (1 day: all of the stored history while the cache is used); their band keys only
    # matter for minutes (anonymous_window) and are swept, so none are stored for it.
    sketches = _sketches(FINGERPRINT_POOL) if _has_table(conn, "fingerprints") else []
    scope = f"api:{TOKEN_NAME}"
    batch = _Batch()
    chunk = 50_000

    opened_type = EventType.CONVERSATION_OPENED.value
    inbound_type = EventType.MESSAGE_INBOUND.value
    step = SPREAD_SECONDS / n
    days: dict[int, str] = {}
    tails = ""
    for i in range(n):
        if i % chunk == 0:
            tails = _random_tails(4 * min(chunk, n - i))
        t = 64 * (i % chunk)
        at = start + i * step
        ms = int(at * 1000)
        time10 = _time_part(ms)
        ct = "ct_" + time10 + tails[t : t + 16]
        conv = "conv_" + time10 + tails[t + 16 : t + 32]
        evt_opened = "evt_" + time10 + tails[t + 32 : t + 48]
        evt_inbound = "evt_" + time10 + tails[t + 48 : t + 64]
        name = name_of(i)
        email = email_of(i)
        ref = f"{i:07d}"
        values = {
            "conv": conv,
            "ct": ct,
            "number": i + 1,
            "time": _stamp(ms, days),
            "evt": evt_opened,
            "email": email,
            "name": name,
            "subject": SUBJECTS[i % len(SUBJECTS)].format(n=ref),
            "text": TEXTS[i % len(TEXTS)].format(n=ref, name=name),
        }
        opened = (tpl.opened % values).encode()
        values["evt"] = evt_inbound
        inbound = (tpl.inbound % values).encode()
        seq = 2 * i + 1
        batch.contacts.append((ct, name, at))
        batch.handles.append((email, ct, at, evt_inbound))
        batch.conversations.append((i + 1, conv, ct, at, at))
        batch.events.append((seq, evt_opened, opened_type, conv, ct, at, opened))
        batch.events.append((seq + 1, evt_inbound, inbound_type, conv, ct, at, inbound))
        ack = (
            b'{"offset":%d,"event_id":"%s","conversation_id":"%s","contact_id":"%s",'
            b'"duplicate":false}' % (seq + 1, evt_inbound.encode(), conv.encode(), ct.encode())
        )
        if sketches:
            batch.prints.append((evt_inbound, ct, at, sketches[i % len(sketches)]))
        key = f"msg:h:stored-{i}"
        batch.idem.append((scope, key, hashlib.sha256(key.encode()).digest(), ack, at))
        if len(batch.contacts) >= chunk:
            batch.flush(conn)
    batch.flush(conn)


def build(n: int, path: Path) -> float:
    """Write a database with n stored contacts at `path`; returns the build time in seconds."""
    started = time.monotonic()
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        migrate_sqlite(conn)
        # A throwaway file written once and renamed into place when complete: no journal.
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -1048576")  # 1 GiB during the load only
        conn.execute("BEGIN IMMEDIATE")
        try:
            _insert_all(conn, n, time.time() - SPREAD_SECONDS)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("PRAGMA journal_mode = WAL")  # as the daemon keeps it
    finally:
        conn.close()
    return time.monotonic() - started


def _meta_path(db: Path) -> Path:
    return db.with_suffix(".json")


def cached_path(n: int, schema_version: int) -> Path:
    return CACHE_DIR / f"identity-n{n}-schema{schema_version}-layout{LAYOUT}.db"


def prepare(n: int, progress: Callable[[str], None] = print) -> Prepared:
    """The cached database for n contacts, built (atomically) if missing, stale or unreadable."""
    version = latest_version()
    path = cached_path(n, version)
    meta_path = _meta_path(path)
    now = time.time()
    if path.exists() and meta_path.exists():
        try:
            meta = orjson.loads(meta_path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            meta = None
        if (
            isinstance(meta, dict)
            and meta.get("n") == n
            and now - float(meta.get("built_at", 0)) < MAX_AGE_SECONDS
            and meta.get("size_bytes") == path.stat().st_size
        ):
            return Prepared(
                n,
                path,
                version,
                float(meta["built_at"]),
                float(meta["build_seconds"]),
                int(meta["size_bytes"]),
                reused=True,
            )
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    progress(f"building the store with {n:,} contacts in {CACHE_DIR} ...")
    partial = path.with_name(path.name + ".partial")
    try:
        seconds = build(n, partial)
        for suffix in ("-wal", "-shm"):
            Path(str(partial) + suffix).unlink(missing_ok=True)
        conn = sqlite3.connect(partial)
        try:
            got = int(conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.close()
        if got != version:
            raise RuntimeError(f"built schema version {got}, expected {version}")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
        for suffix in ("-wal", "-shm"):
            Path(str(partial) + suffix).unlink(missing_ok=True)
    size = path.stat().st_size
    meta_path.write_bytes(
        orjson.dumps({"n": n, "built_at": now, "build_seconds": seconds, "size_bytes": size})
    )
    progress(f"built {n:,} contacts in {seconds:.1f} s ({size / 2**20:,.0f} MiB)")
    return Prepared(n, path, version, now, seconds, size, reused=False)


def copy_to(prepared: Prepared, state_dir: Path) -> float:
    """A private copy of the cached database in `state_dir`, flushed to disk; returns seconds.

    The fsync matters: without it the kernel writes the copy back while the daemon
    is measured, and that write-back competes with the daemon's own fsyncs.
    """
    started = time.monotonic()
    state_dir.mkdir(parents=True, exist_ok=True)
    target = state_dir / DB_NAME
    shutil.copyfile(prepared.path, target)
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.monotonic() - started
