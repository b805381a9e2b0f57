"""The daemon as a real process: kill -9, SIGTERM under load, SIGHUP reload, the CLI."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import REPO, DaemonProcess, auth, message, read_whole_stream
from tests.schemas import validate_event

pytestmark = pytest.mark.e2e


async def _load(
    url: str, clients: int, stop: asyncio.Event, prefix: str
) -> dict[str, tuple[str, int]]:
    """Post distinct messages from several clients until stopped; returns key -> (event id,
    message number) of every request that got a 2xx: what the daemon promised to keep."""
    acked: dict[str, tuple[str, int]] = {}

    async def client(n: int) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            i = 0
            while not stop.is_set():
                key = f"{prefix}-{n}-{i}"
                number = i * 100 + n
                i += 1
                try:
                    async with http.post(
                        url + "/v1/messages",
                        json=message(number),
                        headers={**auth(), "Idempotency-Key": key},
                    ) as resp:
                        if resp.status in (200, 201):
                            acked[key] = ((await resp.json())["event_id"], number)
                except (aiohttp.ClientError, TimeoutError):
                    await asyncio.sleep(0.01)  # the daemon is gone or going: keep no promise

    await asyncio.gather(*(client(n) for n in range(clients)))
    return acked


async def _load_then(
    proc: DaemonProcess, seconds: float, action: Callable[[], None], prefix: str
) -> dict[str, tuple[str, int]]:
    stop = asyncio.Event()
    load = asyncio.create_task(_load(proc.url, 6, stop, prefix))
    await asyncio.sleep(seconds)
    action()
    await asyncio.sleep(0.3)
    stop.set()
    return await load


async def test_acknowledged_messages_survive_kill_9(daemon_process: Callable[..., Any]) -> None:
    proc = daemon_process()
    acked: dict[str, tuple[str, int]] = {}
    rng = random.Random()
    for round_ in range(3):
        proc.start()
        got = await _load_then(
            proc, rng.uniform(0.4, 1.5), lambda: proc.signal(signal.SIGKILL), f"r{round_}"
        )
        assert proc.wait(10) == -signal.SIGKILL
        assert got, "the load must have been acknowledged at least once before the kill"
        acked.update(got)

    proc.start()
    events = await read_whole_stream(proc.url)
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids)), "an event appears twice"
    missing = {event_id for event_id, _ in acked.values()} - set(ids)
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged messages were lost"
    offsets = [e["offset"] for e in events]
    assert offsets == sorted(offsets)
    for event in events:
        validate_event(event)

    # A sender that retries after the restart gets its original answer, not a second event.
    async with aiohttp.ClientSession() as http:
        for key, (event_id, number) in list(acked.items())[-50:]:
            async with http.post(
                proc.url + "/v1/messages",
                json=message(number),
                headers={**auth(), "Idempotency-Key": key},
            ) as resp:
                assert resp.status == 200
                answer = await resp.json()
                assert (answer["event_id"], answer["duplicate"]) == (event_id, True)
    assert len(await read_whole_stream(proc.url)) == len(events)


async def test_sigterm_under_load_drains_and_exits_zero(daemon_process: Callable[..., Any]) -> None:
    proc = daemon_process()
    proc.start()
    started = time.monotonic()
    acked = await _load_then(proc, 1.0, lambda: proc.signal(signal.SIGTERM), "t")
    assert proc.wait(15) == 0
    assert time.monotonic() - started < 15
    logs = proc.logs()
    assert '"event": "daemon.stopping"' in logs and '"event": "daemon.stopped"' in logs
    proc.start()
    ids = {e["id"] for e in await read_whole_stream(proc.url)}
    assert acked and {event_id for event_id, _ in acked.values()} <= ids


def _probe(name: str, marker: Path, **keys: Any) -> str:
    extra = "".join(f"{k} = {orjson.dumps(v).decode()}\n" for k, v in keys.items())
    return f'[connectors.{name}]\ntype = "tests.plugins:Probe"\nmarker = "{marker}"\n{extra}'


async def test_sighup_restarts_only_what_changed_and_refuses_a_bad_config(
    daemon_process: Callable[..., Any], tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    proc = daemon_process(
        _probe("a", marker, route="/probe-a") + _probe("b", marker, route="/probe-b")
    )
    proc.start()
    assert sorted(marker.read_text().split("\n")[:-1]) == ["start a", "start b"]

    async with aiohttp.ClientSession() as http:

        async def get(path: str, token: str | None = None) -> tuple[int, str]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.get(proc.url + path, headers=headers) as resp:
                return resp.status, await resp.text()

        assert await get("/probe-b") == (200, "hello from b")

        text = proc.config_path.read_text()
        changed = text.replace('route = "/probe-b"\n', 'route = "/probe-b"\ngreeting = "hi"\n')
        changed = changed.replace("tok-other-0123456789", "tok-rotated-9876543210")
        proc.config_path.write_text(changed)
        proc.signal(signal.SIGHUP)
        await _wait_for_log(proc, "daemon.reloaded")
        assert marker.read_text().split("\n")[2:-1] == ["stop b", "start b"]
        assert await get("/probe-b") == (200, "hi from b")
        assert await get("/probe-a") == (200, "hello from a")
        assert (await get("/v1/stream", "tok-rotated-9876543210"))[0] == 200
        assert (await get("/v1/stream", "tok-other-0123456789"))[0] == 401

        proc.config_path.write_text(changed + "[store]\ndurability = 'sometimes'\nbogus = 1\n")
        proc.signal(signal.SIGHUP)
        await _wait_for_log(proc, "daemon.reload_refused")
        assert "store.bogus" in proc.logs() and "store.durability" in proc.logs()
        assert await get("/probe-b") == (200, "hi from b")
        assert (await get("/v1/stream", "tok-rotated-9876543210"))[0] == 200
        assert len(marker.read_text().split("\n")) == 5  # nothing restarted

    proc.signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert sorted(marker.read_text().split("\n")[-3:-1]) == ["stop a", "stop b"]


async def _wait_for_log(proc: DaemonProcess, event: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while f'"event": "{event}"' not in proc.logs():
        assert time.monotonic() < deadline, f"no {event} in the log:\n{proc.logs()}"
        await asyncio.sleep(0.05)


def test_generated_token_and_the_stream_command(tmp_path: Path) -> None:
    """With no tokens configured the first start makes one (0600); the CLI uses it."""
    from tests.conftest import free_port

    port = free_port()
    proc = DaemonProcess(tmp_path / "state", f'[http]\nlisten = "127.0.0.1:{port}"\n', port)
    try:
        proc.start()
        token_file = tmp_path / "state" / "api-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert str(token_file) in proc.logs()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        cli = [sys.executable, "-m", "gateway"]
        common = ["--config", str(proc.config_path), "--state-dir", str(tmp_path / "state")]
        token = subprocess.run(
            [*cli, "token", *common], capture_output=True, text=True, env=env, check=True
        ).stdout.strip()
        assert token == token_file.read_text().strip() and len(token) >= 40
        assert token not in proc.logs()

        import urllib.request

        request = urllib.request.Request(
            proc.url + "/v1/messages",
            method="POST",
            data=orjson.dumps(message(1)),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 201
        out = subprocess.run(
            [*cli, "stream", *common],
            capture_output=True,
            text=True,
            env=env,
            check=True,
            timeout=30,
        ).stdout
        lines = [orjson.loads(line) for line in out.splitlines()]
        assert [e["type"] for e in lines] == [
            "helpline.conversation.opened.v1",
            "helpline.message.inbound.v1",
        ]
        follow = subprocess.Popen(
            [*cli, "stream", "--follow", "--after", "2", *common],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            time.sleep(1.0)
            with urllib.request.urlopen(request, timeout=5) as resp:
                assert resp.status == 201
            assert follow.stdout is not None
            followed = orjson.loads(follow.stdout.readline())
            assert followed["offset"] == 3 and followed["type"].startswith("helpline.message")
        finally:
            follow.terminate()
            follow.wait(5)
    finally:
        proc.stop()


def test_a_taken_port_is_a_clear_start_failure(daemon_process: Callable[..., Any]) -> None:
    import socket as sockets

    with sockets.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = daemon_process(port=port)
        with pytest.raises(AssertionError, match="daemon exited with 1"):
            proc.start(timeout=10)
        assert "cannot start" in proc.logs() and "address already in use" in proc.logs().lower()
        assert "http.bind_failed" in proc.logs()


@pytest.mark.e2e
def test_a_second_daemon_on_the_same_store_is_refused(daemon_process: Any) -> None:
    first = daemon_process(name="shared")
    first.start()
    second = daemon_process(name="shared")
    with pytest.raises(AssertionError) as refused:
        second.start()
    assert "daemon exited with 1" in str(refused.value)
    assert "is in use by another process" in second.logs()
    assert f"(pid {first.proc.pid})" in second.logs()
    first.stop()
    second.start()  # free once the first has stopped
