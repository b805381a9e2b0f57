"""Backup and restore of the SQLite store: one self-contained file, taken while the daemon runs.

The copy uses SQLite's online backup API from a connection of our own. That API
starts over from the first page whenever another connection commits between two
of its steps, so under a steady write load a paced copy never finishes (measured
here: 1,174 steps and still 99% to go after 8 s). Holding one read transaction
across all the steps pins a single WAL snapshot instead: the copy is the store as
it was at that instant, and in WAL mode a reader never blocks the daemon's writer.
Only the checkpointer cannot move past the snapshot, so the -wal file grows for
the length of the copy. The steps are paced anyway so the copy's reads do not
crowd the daemon's commit fsyncs on the same disk.

Restore refuses while any process has the store open: every WAL-mode connection
holds a shared lock on the database file for as long as it is open, so failing to
take an exclusive one means a daemon (or a backup) is using it. A daemon started
in the instant between that check and the swap is not excluded: that needs a lock
the daemon holds on its state directory for its whole run.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.state_lock import StateDirBusy, StateLock
from gateway.store import SchemaTooNew, StoreError
from gateway.store.migrate import latest_version

PAGES_PER_STEP = 256  # 1 MiB at the default page size: 1,000 steps for a 1 GB store
PAUSE_BETWEEN_STEPS = 0.005  # seconds
_SIDE_FILES = ("-wal", "-shm", "-journal")


class BackupError(StoreError):
    """A backup or restore refused or failed; the message is for the operator."""


class StoreInUse(BackupError):
    """Another process has the store open: a running daemon, or a backup in progress."""


class TargetExists(BackupError):
    """The destination holds data, and replacing it was not asked for (--force)."""


@dataclass(frozen=True)
class StoreFacts:
    """What a store file holds, as read from the file itself."""

    schema_version: int
    head_offset: int
    size: int  # bytes


@dataclass(frozen=True)
class Restored:
    facts: StoreFacts
    kept: Path | None  # where the replaced store was set aside, if there was one


def backup_store(
    store: Path,
    target: Path,
    *,
    force: bool = False,
    pages: int = PAGES_PER_STEP,
    pause: float = PAUSE_BETWEEN_STEPS,
) -> StoreFacts:
    """Copy `store` (open or not) to `target`, atomically: a checked, fsynced temp file in
    the target's directory renamed into place, in rollback-journal mode so it stands alone."""
    if not store.is_file():
        raise BackupError(
            f"no store at {store} (is --state-dir, or the config's store.url, right?)"
        )
    if target.exists() and not force:
        raise TargetExists(f"{target} exists; add --force to replace it")
    if not target.parent.is_dir():
        raise BackupError(f"{target.parent} is not a directory")
    temp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    try:
        _create_private(temp)
        _copy_snapshot(store, temp, pages, pause)
        facts = _finish(temp, str(store))
        _fsync(temp)
        _place(temp, target, force)
        _fsync(target.parent)
    except (sqlite3.Error, OSError) as err:
        raise BackupError(f"backup of {store} to {target} failed: {err}") from err
    finally:
        _discard(temp)
    return facts


def restore_store(
    source: Path, store: Path, *, force: bool = False, now: Callable[[], float] = time.time
) -> Restored:
    """Put the backup `source` in place of `store`, which no process may have open; a store
    with events is replaced only with `force`, and is kept aside, never deleted."""
    if not source.is_file():
        raise BackupError(f"{source}: no such file")
    if Path(f"{source}-wal").exists():
        raise BackupError(
            f"{source}-wal exists: {source} is a live store's file, not a backup "
            "(make one with `helpline backup`)"
        )
    temp = store.parent / f".{store.name}.restore.{os.getpid()}.tmp"
    lock = StateLock(store)  # no daemon may start while the store is swapped
    try:
        lock.acquire("restoring")
    except StateDirBusy as err:
        raise StoreInUse(str(err)) from err
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        _refuse_if_in_use(store)
        if store.exists() and not force and _holds_events(store):
            raise TargetExists(f"{store} holds events; add --force to replace it (kept aside)")
        _create_private(temp)
        _copy_bytes(source, temp)
        facts = _finish(temp, str(source))
        _fsync(temp)
        _match_owner(temp, store if store.exists() else store.parent)
        _refuse_if_in_use(store)  # again: the copy and check may have taken a while
        kept = _set_aside(store, now())
        os.replace(temp, store)
        _fsync(store.parent)
    except (sqlite3.Error, OSError) as err:
        raise BackupError(f"restore of {source} into {store} failed: {err}") from err
    finally:
        _discard(temp)
        lock.release()
    return Restored(facts, kept)


def store_in_use(store: Path) -> bool:
    """Whether another process has the store open; False when there is no store."""
    if not store.exists():
        return False
    conn = sqlite3.connect(_uri(store, "rw"), uri=True, isolation_level=None, timeout=0)
    try:
        # Exclusive locking mode in WAL: no shared memory, an exclusive lock on the file,
        # which every other open connection's shared lock prevents.
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("ROLLBACK")
    except sqlite3.OperationalError as err:
        if err.sqlite_errorname in ("SQLITE_BUSY", "SQLITE_LOCKED"):
            return True
        raise
    finally:
        conn.close()
    return False


def _refuse_if_in_use(store: Path) -> None:
    try:
        busy = store_in_use(store)
    except sqlite3.DatabaseError:
        return  # not a database (or not one we can open): no daemon serves it
    if busy:
        raise StoreInUse(
            f"{store} is open in another process (a running daemon, or a backup): "
            "stop the daemon first"
        )


def _uri(path: Path, mode: str) -> str:
    return f"{path.resolve().as_uri()}?mode={mode}"


def _copy_snapshot(store: Path, temp: Path, pages: int, pause: float) -> None:
    source = sqlite3.connect(_uri(store, "rw"), uri=True, isolation_level=None)
    try:
        source.execute("PRAGMA busy_timeout = 5000")
        source.execute("PRAGMA query_only = 1")
        source.execute("BEGIN")
        source.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the snapshot, now
        copy = sqlite3.connect(temp, isolation_level=None)
        try:
            source.backup(copy, pages=pages, progress=_Pacer(pause))
        finally:
            copy.close()
        source.execute("ROLLBACK")
    finally:
        source.close()


class _Pacer:
    """Sleeps between steps, and stops a copy that starts over instead of looping forever:
    with the snapshot held that cannot happen, so if it does, something is wrong."""

    def __init__(self, pause: float) -> None:
        self._pause = pause
        self._remaining: int | None = None

    def __call__(self, status: int, remaining: int, total: int) -> None:
        if self._remaining is not None and remaining > self._remaining:
            raise BackupError("the copy started over: the store changed under its snapshot")
        self._remaining = remaining
        time.sleep(self._pause)


def _finish(temp: Path, name: str) -> StoreFacts:
    """Check the copy is a whole helpline store this binary can run, and make it stand alone."""
    conn = sqlite3.connect(temp, isolation_level=None)
    try:
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.DatabaseError as err:
            raise BackupError(f"{name} is not a helpline store: {err}") from err
        problems = [str(row[0]) for row in conn.execute("PRAGMA integrity_check").fetchall()]
        if problems != ["ok"]:
            raise BackupError(f"{name} fails SQLite's integrity check: {'; '.join(problems[:5])}")
        has_events = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
        ).fetchone()
        if not has_events or version == 0:
            raise BackupError(f"{name} is not a helpline store (no events table)")
        newest = latest_version()
        if version > newest:
            raise SchemaTooNew(
                f"{name} has schema version {version}, newer than this helpline knows "
                f"({newest}): restore it with the helpline version that wrote it"
            )
        conn.execute("PRAGMA journal_mode = DELETE").fetchone()  # no -wal/-shm beside it
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    finally:
        conn.close()
    leftovers = [suffix for suffix in _SIDE_FILES if Path(f"{temp}{suffix}").exists()]
    if leftovers:
        raise BackupError(f"the copy still has {', '.join(leftovers)} files beside it")
    return StoreFacts(version, int(row[0]) if row else 0, temp.stat().st_size)


def _holds_events(store: Path) -> bool:
    """Whether replacing the store loses events; an unreadable store counts as holding some."""
    try:
        conn = sqlite3.connect(_uri(store, "rw"), uri=True, isolation_level=None)
        try:
            return bool(conn.execute("SELECT EXISTS (SELECT 1 FROM events)").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return True


def _set_aside(store: Path, now: float) -> Path | None:
    """Keep the current store (and its -wal, so it opens as it was) under a dated name.

    A hard link keeps the store at its own name too, so the swap that follows is one
    atomic rename and a crash in between never leaves the state directory without one.
    """
    if not store.exists():
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    aside = store.with_name(f"{store.name}.before-restore-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = store.with_name(f"{store.name}.before-restore-{stamp}-{n}")
    for suffix in _SIDE_FILES:
        side = Path(f"{store}{suffix}")
        if side.exists():
            side.rename(f"{aside}{suffix}")
    try:
        os.link(store, aside)
    except OSError:
        store.rename(aside)  # a file system without hard links
    return aside


def _create_private(path: Path) -> None:
    """Stores hold personal data: the copy is readable by its owner only."""
    _discard(path)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _copy_bytes(source: Path, temp: Path) -> None:
    with source.open("rb") as src, temp.open("r+b") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)


def _match_owner(temp: Path, reference: Path) -> None:
    """Run as root for a service user, the restored store must stay the service's."""
    if os.geteuid() == 0:
        st = reference.stat()
        os.chown(temp, st.st_uid, st.st_gid)


def _place(temp: Path, target: Path, force: bool) -> None:
    if force:
        os.replace(temp, target)
        return
    try:
        os.link(temp, target)  # fails if the target appeared meanwhile: never clobbers
    except FileExistsError as err:
        raise TargetExists(f"{target} exists; add --force to replace it") from err
    except OSError:
        os.replace(temp, target)  # a file system without hard links
        return
    temp.unlink()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(path: Path) -> None:
    for name in (str(path), *(f"{path}{suffix}" for suffix in _SIDE_FILES)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
