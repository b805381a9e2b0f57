"""`helpline backup` under write load, `helpline restore`, and what restore refuses.

The daemon is a real `helpline run` process and the commands are real `helpline`
processes, as an operator (or a backup timer) runs them next to the service.
"""

from __future__ import annotations

import asyncio
import gc
import re
import resource
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.cli import main
from gateway.store.migrate import latest_version, sqlite_steps
from tests.conftest import REPO, DaemonProcess, auth, message, read_whole_stream
from tests.schemas import validate_event


def helpline(*args: str | Path, limit_file_size: int | None = None) -> tuple[int, str, str]:
    """The command as its own process (a file-size limit applies to that process only)."""

    def limit() -> None:  # RLIMIT_FSIZE: writes past it fail with EFBIG, as on a full disk
        if limit_file_size is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))

    done = subprocess.run(
        [sys.executable, "-m", "gateway", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        preexec_fn=limit,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def run_cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """The command in this process: the same code, without a second of interpreter start."""
    capsys.readouterr()
    code = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return code, out, err


async def helpline_async(*args: str | Path) -> tuple[int, str, str]:
    """The command as a subprocess without blocking this loop (the load keeps posting)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *map(str, args),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def head_of(output: str) -> int:
    found = re.search(r"stream head offset (\d+)", output)
    assert found, output
    return int(found.group(1))


async def post_until(url: str, clients: int, stop: asyncio.Event) -> list[tuple[float, str, int]]:
    """Distinct messages from several clients until stopped: (monotonic time the answer
    arrived, event id, offset) of every one the daemon acknowledged."""
    acked: list[tuple[float, str, int]] = []

    async def client(n: int) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            i = 0
            while not stop.is_set():
                i += 1
                async with http.post(
                    url + "/v1/messages", json=message(i * 100 + n), headers=auth()
                ) as resp:
                    assert resp.status == 201, await resp.text()
                    answer = await resp.json()
                acked.append((time.monotonic(), answer["event_id"], answer["offset"]))

    await asyncio.gather(*(client(n) for n in range(clients)))
    return acked


async def post_one(url: str, n: int) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url + "/v1/messages", json=message(n), headers=auth()) as resp,
    ):
        assert resp.status == 201
        return int((await resp.json())["offset"])


def assert_whole(events: list[dict[str, Any]], head: int) -> None:
    """Every event parses against its schema and the offsets run 1..head with no gap."""
    assert [e["offset"] for e in events] == list(range(1, head + 1))
    for event in events:
        validate_event(event)


async def test_backup_under_write_load_restores_to_a_consistent_store(
    daemon_process: Callable[..., DaemonProcess],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    live = daemon_process(name="live")
    live.start()
    backup = tmp_path / "backups" / "helpline-backup.db"
    backup.parent.mkdir()
    where = ("--config", live.config_path, "--state-dir", live.state_dir)

    stop = asyncio.Event()
    load = asyncio.create_task(post_until(live.url, 4, stop))
    await asyncio.sleep(0.8)
    began = time.monotonic()
    code, out, err = await helpline_async("backup", backup, *where)
    ended = time.monotonic()
    assert code == 0, err
    # Still under load: restore must refuse to pull the store from under the daemon.
    code, _, err = await asyncio.to_thread(run_cli, capsys, "restore", backup, *where, "--force")
    assert code == 1 and "in use by another process" in err, err
    await asyncio.sleep(0.3)
    stop.set()
    acked = await load
    original = await read_whole_stream(live.url)
    live.stop()
    gc.collect()  # conftest's validate_store leaves its connection to the store to the collector

    head = head_of(out)
    before = [(event_id, offset) for at, event_id, offset in acked if at < began]
    during = [at for at, _, _ in acked if began <= at <= ended]
    assert len(before) > 50 and during, "the backup must run while messages are being written"
    assert max(offset for _, offset in before) <= head < original[-1]["offset"]
    assert sorted(p.name for p in backup.parent.iterdir()) == [backup.name]  # no -wal, no temp
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600  # it holds personal data
    with closing(sqlite3.connect(f"file:{backup}?mode=ro", uri=True)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"

    # Into a new state directory: the daemon opens it and serves exactly the snapshot.
    restored = daemon_process(name="restored")
    code, out, err = run_cli(capsys, "restore", backup, "--state-dir", restored.state_dir)
    assert code == 0, err
    assert head_of(out) == head and "kept" not in out
    restored.start()
    events = await read_whole_stream(restored.url)
    assert_whole(events, head)
    assert events == original[:head]  # a prefix of what the daemon went on to write
    assert {event_id for event_id, _ in before} <= {e["id"] for e in events}
    assert await post_one(restored.url, 999_001) > head
    restored.stop()
    gc.collect()

    # Into the old one: refused while it holds events, done with --force, the old store kept.
    code, _, err = run_cli(capsys, "restore", backup, *where)
    assert code == 2 and "--force" in err, err
    code, out, err = run_cli(capsys, "restore", backup, *where, "--force")
    assert code == 0, err
    kept = list(live.state_dir.glob("helpline.db.before-restore-*"))
    assert len(kept) == 1 and f"kept as {kept[0]}" in out
    with closing(sqlite3.connect(f"file:{kept[0]}?mode=ro", uri=True)) as db:
        assert db.execute("SELECT max(seq) FROM events").fetchone()[0] == original[-1]["offset"]
    live.start()
    assert await read_whole_stream(live.url) == events
    assert await post_one(live.url, 999_002) > head


def make_store(path: Path, version: int) -> None:
    """A helpline store at a given schema version, as a daemon of that version leaves it."""
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        for step, _, sql in sqlite_steps():
            if step <= version:
                db.executescript(f"BEGIN;\n{sql}\nPRAGMA user_version = {step};\nCOMMIT;")
    assert not Path(f"{path}-wal").exists()  # the close checkpointed it


def test_restore_refuses_a_file_that_is_not_a_helpline_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database, just text\n" * 200)
    other = tmp_path / "other.db"
    with closing(sqlite3.connect(other)) as db:
        db.execute("CREATE TABLE notes (body TEXT)")
        db.execute("PRAGMA user_version = 3")
    state = tmp_path / "state"
    for wrong in (junk, other):
        code, _, err = run_cli(capsys, "restore", wrong, "--state-dir", state)
        assert code == 1 and "is not a helpline store" in err, err
    # nothing restored, no temp file left behind (only the store's lock file)
    assert [p.name for p in state.iterdir()] == ["helpline.db.lock"]


def test_restore_refuses_a_newer_schema_and_takes_an_older_one(
    daemon_process: Callable[..., DaemonProcess],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    newest = latest_version()
    newer = tmp_path / "newer.db"
    make_store(newer, newest)
    with closing(sqlite3.connect(newer)) as db:
        db.execute(f"PRAGMA user_version = {newest + 1}")
    proc = daemon_process(name="state")
    code, _, err = run_cli(capsys, "restore", newer, "--state-dir", proc.state_dir)
    assert code == 1 and f"schema version {newest + 1}, newer than this helpline" in err, err
    assert not (proc.state_dir / "helpline.db").exists()

    older = tmp_path / "older.db"
    make_store(older, newest - 2)
    code, out, err = run_cli(capsys, "restore", older, "--state-dir", proc.state_dir)
    assert code == 0, err
    assert (
        f"schema version {newest - 2}" in out and f"migrates it to schema version {newest}" in out
    )
    proc.start()  # the migrations run at start
    proc.stop()
    with closing(sqlite3.connect(proc.state_dir / "helpline.db")) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == newest


def test_backup_refuses_to_overwrite_and_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    make_store(state / "helpline.db", latest_version())
    target = tmp_path / "out" / "copy.db"
    target.parent.mkdir()
    target.write_text("an earlier backup")

    code, _, err = run_cli(capsys, "backup", target, "--state-dir", state)
    assert code == 2 and "exists; add --force" in err, err
    assert target.read_text() == "an earlier backup"

    code, _, err = run_cli(capsys, "backup", tmp_path / "x.db", "--state-dir", tmp_path / "none")
    assert code == 1 and "no store at" in err, err

    # A full disk (here: a file-size limit the copy outgrows) leaves no partial file.
    size = (state / "helpline.db").stat().st_size
    code, _, err = helpline(
        "backup", target, "--state-dir", state, "--force", limit_file_size=size // 2
    )
    assert code == 1 and "backup of" in err and "failed" in err, err
    assert [p.name for p in target.parent.iterdir()] == ["copy.db"]
    assert target.read_text() == "an earlier backup"

    code, out, err = run_cli(capsys, "backup", target, "--state-dir", state, "--force")
    assert code == 0, err
    assert f"schema version {latest_version()}, stream head offset 0" in out
