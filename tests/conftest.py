"""Shared fixtures: free ports, a daemon in this process, a daemon as a real subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.config import parse_config
from gateway.daemon import Daemon
from gateway.events import with_offset

REPO = Path(__file__).resolve().parent.parent
TOKENS = {
    "main": "tok-main-0123456789",
    "other": "tok-other-0123456789",
    "crm": "tok-crm-trusted-0123456789",  # trusted: its messages are verified evidence
}


async def until(check: Callable[[], bool], timeout: float = 8.0) -> None:
    """Wait, with a deadline, for something the daemon does after it has answered."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_config(port: int, extra: str = "", http: str = "") -> str:
    """A config on a free loopback port with two API tokens; `http` adds [http] keys."""
    tokens = "".join(
        f'[http.tokens.{name}]\nsecret = "{secret}"\ntrusted = {str(name == "crm").lower()}\n'
        for name, secret in TOKENS.items()
    )
    return f'[http]\nlisten = "127.0.0.1:{port}"\n{http}{tokens}{extra}'


def auth(token: str = "main") -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[token]}"}


def message(n: int, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "from": {"email": f"customer{n}@example.org", "name": f"Customer {n}"},
        "subject": f"Question {n}",
        "text": f"Hello, this is question number {n}.",
    }
    body.update(over)
    return body


@dataclass
class LiveDaemon:
    """A daemon running in the test's own event loop, reached over a real socket."""

    daemon: Daemon
    url: str
    http: aiohttp.ClientSession

    async def post(self, path: str, body: Any, token: str = "main", **headers: str) -> Any:
        async with self.http.post(
            self.url + path, json=body, headers={**auth(token), **headers}
        ) as resp:
            return resp.status, await resp.json(content_type=None), resp.headers

    async def get(self, path: str, token: str | None = "main") -> Any:
        headers = auth(token) if token else {}
        async with self.http.get(self.url + path, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None), resp.headers

    async def stream(self, after: int = 0) -> list[dict[str, Any]]:
        status, body, _ = await self.get(f"/v1/stream?after={after}&limit=1000")
        assert status == 200
        from tests.schemas import validate_event

        for event in body["events"]:
            validate_event(event)
        return list(body["events"])


@pytest.fixture
async def make_daemon(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start daemons in this loop (config extras, a controllable clock); all stop at teardown."""
    started: list[LiveDaemon] = []

    async def start(
        extra: str = "",
        clock: Callable[[], float] | None = None,
        http: str = "",
        state_dir: Path | None = None,  # a stopped daemon's, to start it again
    ) -> LiveDaemon:
        port = free_port()
        config = parse_config(base_config(port, extra, http))
        kwargs: dict[str, Any] = {"clock": clock} if clock else {}
        daemon = Daemon(config, state_dir or tmp_path / f"state{len(started)}", **kwargs)
        await daemon.start()
        running = LiveDaemon(daemon, f"http://127.0.0.1:{port}", aiohttp.ClientSession())
        started.append(running)
        return running

    yield start
    for running in started:
        await running.http.close()
        await running.daemon.stop()
        validate_store(running.daemon.store.path)


@pytest.fixture
async def live(make_daemon: Callable[..., Any]) -> LiveDaemon:
    return await make_daemon()  # type: ignore[no-any-return]


async def read_whole_stream(url: str) -> list[dict[str, Any]]:
    """Every event a daemon (in this process or another) serves, page by page."""
    events: list[dict[str, Any]] = []
    after = 0
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(
                f"{url}/v1/stream?after={after}&limit=1000", headers=auth()
            ) as resp:
                assert resp.status == 200, await resp.text()
                page = await resp.json()
            if not page["events"]:
                return events
            events.extend(page["events"])
            after = page["next_after"]


def validate_store(path: Path) -> None:
    """Every event a daemon emitted, as the stream serves it, against its schema in docs/."""
    from tests.schemas import validate_event

    if not path.exists():
        return
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT seq, body FROM events ORDER BY seq").fetchall()
    for seq, body in rows:
        validate_event(orjson.loads(with_offset(seq, bytes(body))))


class DaemonProcess:
    """`helpline run` as a real subprocess, as systemd would start it."""

    def __init__(self, state_dir: Path, config_text: str, port: int) -> None:
        self.state_dir = state_dir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.config_path = state_dir.parent / f"{state_dir.name}.toml"
        self.config_path.write_text(config_text)
        self.log_path = state_dir.parent / f"{state_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway",
                "run",
                "--config",
                str(self.config_path),
                "--state-dir",
                str(self.state_dir),
                "--log-format",
                "json",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    pass
            except OSError:
                time.sleep(0.05)
                continue
            if "daemon.ready" in self.logs():
                return
            time.sleep(0.05)
        raise AssertionError(f"daemon not ready within {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        validate_store(self.state_dir / "helpline.db")


@pytest.fixture
def daemon_process(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    made: list[DaemonProcess] = []

    def make(extra: str = "", name: str = "state", port: int | None = None) -> DaemonProcess:
        port = port or free_port()
        proc = DaemonProcess(tmp_path / name, base_config(port, extra), port)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.stop()
