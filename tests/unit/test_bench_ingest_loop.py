"""The in-process ingest loop that bench/instructions.py counts walks the API's whole path."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bench.ingest_loop import ingest


async def test_every_message_is_ingested_with_its_conversation_and_clock(tmp_path: Path) -> None:
    cpu = await ingest(60, tmp_path)
    assert cpu > 0
    conn = sqlite3.connect(tmp_path / "helpline.db")
    kinds = dict(conn.execute("SELECT type, count(*) FROM events GROUP BY type").fetchall())
    assert kinds == {
        "helpline.conversation.opened.v1": 60,
        "helpline.message.inbound.v1": 60,
    }
    assert conn.execute("SELECT count(*) FROM contacts").fetchone() == (60,)
    # the first-response tracker caught up: one running clock per conversation
    assert conn.execute(
        "SELECT count(*) FROM first_response_clocks WHERE state = 'running'"
    ).fetchone() == (60,)
    assert conn.execute("SELECT count(*) FROM fingerprints WHERE bands IS NOT NULL").fetchone() == (
        60,
    )
