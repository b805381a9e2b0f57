"""Identity through a real daemon process: crash during merges, the contacts command."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest

from tests.conftest import REPO, TOKENS, auth, message

pytestmark = pytest.mark.e2e


async def _merge_load(url: str, stop: asyncio.Event) -> list[tuple[str, str]]:
    """Pairs of handles that a trusted message joined and was acknowledged for."""
    joined: list[tuple[str, str]] = []

    async def worker(w: int) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            i = 0
            while not stop.is_set():
                email, phone = f"p{w}-{i}@example.org", f"+49301{w:02d}{i:05d}"
                i += 1
                try:
                    for body, token in (
                        (message(i, **{"from": {"email": email}}), "main"),
                        (message(i, **{"from": {"phone": phone}}), "main"),
                        (message(i, **{"from": {"email": email, "phone": phone}}), "crm"),
                    ):
                        async with http.post(
                            url + "/v1/messages", json=body, headers=auth(token)
                        ) as resp:
                            if resp.status != 201:
                                raise aiohttp.ClientError(f"status {resp.status}")
                    joined.append((email, phone))
                except (aiohttp.ClientError, TimeoutError):
                    await asyncio.sleep(0.01)

    await asyncio.gather(*(worker(w) for w in range(4)))
    return joined


async def test_a_crash_during_merges_leaves_a_consistent_graph(
    daemon_process: Callable[..., Any],
) -> None:
    proc = daemon_process()
    proc.start()
    stop = asyncio.Event()
    load = asyncio.create_task(_merge_load(proc.url, stop))
    await asyncio.sleep(random.uniform(0.8, 1.6))
    proc.signal(signal.SIGKILL)
    proc.wait(10)
    stop.set()
    joined = await load
    assert joined, "some merges must have been acknowledged before the kill"

    with sqlite3.connect(proc.state_dir / "helpline.db") as db:
        chains = db.execute(
            "SELECT count(*) FROM contacts c JOIN contacts m ON m.id = c.merged_into "
            "WHERE m.merged_into IS NOT NULL"
        ).fetchone()[0]
        assert chains == 0, "a merge pointer leads to a contact that is itself merged"
        stray = db.execute(
            "SELECT count(*) FROM merges g JOIN contacts c ON c.id = g.merged "
            "WHERE g.undone_at IS NULL AND coalesce(c.merged_into, '') != g.survivor"
        ).fetchone()[0]
        assert stray == 0, "a recorded merge is not reflected in the contacts"
        events = db.execute(
            "SELECT count(*) FROM events WHERE type = 'helpline.contact.merged.v1'"
        ).fetchone()[0]
        merges = db.execute("SELECT count(*) FROM merges").fetchone()[0]
        assert events == merges

    proc.start()
    async with aiohttp.ClientSession() as http:
        for email, phone in joined:
            found = []
            for handle in (email, phone):
                async with http.get(
                    f"{proc.url}/v1/contacts?handle={quote(handle)}", headers=auth()
                ) as resp:
                    assert resp.status == 200
                    found.append((await resp.json())["contact_id"])
            assert found[0] == found[1], f"{email} and {phone} were merged, then came apart"


def test_the_contacts_command(daemon_process: Callable[..., Any]) -> None:
    proc = daemon_process()
    proc.start()
    import urllib.request

    request = urllib.request.Request(
        proc.url + "/v1/messages",
        method="POST",
        data=orjson.dumps(message(1, **{"from": {"email": "ann@example.org"}})),
        headers={**auth(), "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        contact_id = orjson.loads(resp.read())["contact_id"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HELPLINE_TOKEN": TOKENS["main"]}
    cli = [sys.executable, "-m", "gateway", "contacts", "--config", str(proc.config_path)]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli, *args], capture_output=True, text=True, env=env, timeout=30, check=False
        )

    found = run("find", "ANN@example.org")
    assert found.returncode == 0, found.stderr
    assert orjson.loads(found.stdout)["contact_id"] == contact_id
    missing = run("find", "nobody@example.org")
    assert missing.returncode == 1 and "404" in missing.stderr
    refused = run("erase", contact_id)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    erased = run("erase", contact_id, "--yes", "--reason", "asked by phone")
    assert erased.returncode == 0, erased.stderr
    assert orjson.loads(erased.stdout)["contact"]["erased_at"] is not None
    assert run("find", "ann@example.org").returncode == 1
