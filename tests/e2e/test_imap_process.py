"""kill -9 of the daemon in the middle of an IMAP batch, against a real Dovecot:
after the restart every message is in the stream once, stored once, and marked."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from tests.conftest import DaemonProcess
from tests.dovecot import PrivateDovecot
from tests.integration.test_imap import INBOUND, imap_section, mail
from tests.peers import need

pytestmark = pytest.mark.e2e

USER = "box1@example.test"
COUNT = 120


@pytest.fixture
def dovecot() -> Iterator[PrivateDovecot]:
    need("dovecot")
    with PrivateDovecot({USER: "secret1"}) as server:
        yield server


def inbound(proc: DaemonProcess) -> list[dict[str, Any]]:
    path = proc.state_dir / "helpline.db"
    if not path.exists():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT body FROM events ORDER BY seq").fetchall()
    events = [orjson.loads(bytes(body)) for (body,) in rows]
    return [e for e in events if e["type"] == INBOUND]


def raw_rows(proc: DaemonProcess) -> int:
    with sqlite3.connect(f"file:{proc.state_dir / 'helpline.db'}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM raw_mail").fetchone()[0])


async def test_kill_during_an_imap_batch_neither_loses_nor_repeats(
    dovecot: PrivateDovecot, daemon_process: Callable[..., DaemonProcess]
) -> None:
    proc = daemon_process(imap_section(dovecot, USER, "batch_size = 7\n"))
    proc.start()
    deadline = time.monotonic() + 20
    while "imap.connected" not in proc.logs():  # the folder has its position now
        assert time.monotonic() < deadline, proc.logs()
        await asyncio.sleep(0.05)
    subjects = {f"Question {n}" for n in range(COUNT)}
    for n in range(COUNT):
        await asyncio.to_thread(dovecot.append, USER, "INBOX", mail(n))
    while len(inbound(proc)) < COUNT // 3:
        assert time.monotonic() < deadline + 30, proc.logs()
        await asyncio.sleep(0.01)
    proc.signal(signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL
    seen_before = len(inbound(proc))
    assert seen_before < COUNT, "the kill must land before the mailbox is drained"

    proc.start()
    deadline = time.monotonic() + 60
    while len(inbound(proc)) < COUNT and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # anything read twice would show up now
    events = inbound(proc)
    got = [e["data"]["subject"] for e in events]
    assert sorted(got) == sorted(subjects), f"{len(got)} events for {COUNT} mails"
    assert raw_rows(proc) == COUNT  # no message was even fetched and stored twice
    unseen = await asyncio.to_thread(dovecot.uids, USER, "INBOX", "UNSEEN")
    assert unseen == []
