"""systemd's notify protocol against a real AF_UNIX datagram socket, as systemd listens.

`helpline run` is a real subprocess with $NOTIFY_SOCKET (a path, or an abstract
name) and $WATCHDOG_USEC set; the test reads the datagrams the way systemd does.
The watchdog's purpose is checked honestly: the pinger task stops while its event
loop is blocked (in process, with time.sleep on the loop), and the daemon's own
loop is blocked by something real — another process holding the store's write
lock, which the daemon waits for on its loop (SQLite's busy timeout).
"""

from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from gateway.systemd_notify import Notifier, monotonic_usec, watchdog_interval
from tests.conftest import REPO, TOKENS, base_config, free_port, message

WATCHDOG_USEC = 400_000  # pings every 0.2 s
MAIL = b"From: customer@example.org\r\nTo: support@example.com\r\nSubject: hi\r\n\r\nHello.\r\n"


class NotifySocket:
    """systemd's end: a bound datagram socket; a thread stamps each message on arrival."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._done = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._done:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            with self._lock:
                self.messages.append((time.monotonic(), fields))

    def snapshot(self) -> list[tuple[float, dict[str, str]]]:
        with self._lock:
            return list(self.messages)

    def wait_for(
        self, check: Callable[[dict[str, str]], bool], after: int = 0, timeout: float = 20.0
    ) -> tuple[int, float, dict[str, str]]:
        """The first message from index `after` on that passes `check`: (index, time, fields)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index, (at, fields) in enumerate(self.snapshot()[after:], start=after):
                if check(fields):
                    return index, at, fields
            time.sleep(0.01)
        raise AssertionError(f"no such notify message in {timeout}s: {self.snapshot()[after:]}")

    def pings(self, start: float, end: float) -> list[float]:
        return [at for at, f in self.snapshot() if "WATCHDOG" in f and start <= at <= end]

    def close(self) -> None:
        self._done = True
        self._thread.join(2)
        self.sock.close()
        if not self.address.startswith("@"):
            Path(self.address).unlink(missing_ok=True)


def run_daemon(tmp: Path, config: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    (tmp / "helpline.toml").write_text(config)
    log = (tmp / "daemon.log").open("ab")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "gateway", "run", "--config", str(tmp / "helpline.toml")),
            *("--state-dir", str(tmp / "state"), "--log-format", "json"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        cwd=REPO,
    )
    log.close()
    return proc


def post_message(port: int, n: int, timeout: float = 10.0) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/messages",
        data=orjson.dumps(message(n)),
        headers={"Authorization": f"Bearer {TOKENS['main']}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return int(resp.status)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A directory whose socket paths fit in sun_path (108 bytes), unlike pytest's tmp_path."""
    path = Path("/tmp") / f"hl-notify-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def smtp_config(http_port: int, smtp_port: int) -> str:
    return base_config(
        http_port,
        f'[connectors.mx]\ntype = "smtp"\nlisten = "127.0.0.1:{smtp_port}"\n'
        'recipients = ["support@example.com"]\n',
    )


def test_notify_lifecycle(short_tmp: Path) -> None:
    """READY once HTTP and SMTP accept, STATUS lines with live counts, WATCHDOG pings,
    RELOADING with MONOTONIC_USEC then READY on SIGHUP, STOPPING on SIGTERM."""
    http_port, smtp_port = free_port(), free_port()
    notify = NotifySocket(str(short_tmp / "notify"))
    proc = run_daemon(
        short_tmp,
        smtp_config(http_port, smtp_port),
        {"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": str(WATCHDOG_USEC)},
    )
    try:
        index, _, ready = notify.wait_for(lambda f: f.get("READY") == "1")
        # Right when READY arrives, both listeners accept.
        for port in (http_port, smtp_port):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        assert not any("READY" in f for _, f in notify.snapshot()[:index])
        assert ready["STATUS"] == (
            "ready: 1/1 components up, 0 events ingested, backend lag 0 events"
        )
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
            client.sendmail(
                "customer@example.org", ["support@example.com"], b"Subject: hi\r\n\r\nhi"
            )
        assert post_message(http_port, 1) == 201
        notify.wait_for(lambda f: "2 events ingested" in f.get("STATUS", ""), after=index)

        started = time.monotonic()
        time.sleep(1.0)
        assert len(notify.pings(started, time.monotonic())) >= 3

        mark = len(notify.snapshot())
        before = monotonic_usec()
        proc.send_signal(signal.SIGHUP)
        index, _, reloading = notify.wait_for(lambda f: "RELOADING" in f, after=mark)
        assert reloading["RELOADING"] == "1"
        assert before <= int(reloading["MONOTONIC_USEC"]) <= monotonic_usec()
        notify.wait_for(lambda f: f.get("READY") == "1", after=index)

        mark = len(notify.snapshot())
        proc.send_signal(signal.SIGTERM)
        notify.wait_for(lambda f: f.get("STOPPING") == "1", after=mark)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        notify.close()


def test_abstract_socket_and_a_refused_reload(short_tmp: Path) -> None:
    """An abstract NOTIFY_SOCKET ("@name"); a reload refused for a broken config still
    ends with READY=1: the old configuration keeps serving."""
    notify = NotifySocket(f"@helpline-test-{uuid.uuid4().hex}")
    port = free_port()
    proc = run_daemon(short_tmp, base_config(port), {"NOTIFY_SOCKET": notify.address})
    try:
        index, _, _ = notify.wait_for(lambda f: f.get("READY") == "1")
        (short_tmp / "helpline.toml").write_text("[http]\nlisten = 12\n")
        proc.send_signal(signal.SIGHUP)
        index, _, _ = notify.wait_for(lambda f: "RELOADING" in f, after=index + 1)
        notify.wait_for(lambda f: f.get("READY") == "1", after=index)
        assert "daemon.reload_refused" in (short_tmp / "daemon.log").read_text()
        assert not notify.pings(0, time.monotonic())  # no WATCHDOG_USEC: no pings
        proc.send_signal(signal.SIGTERM)
        notify.wait_for(lambda f: f.get("STOPPING") == "1", after=index)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        notify.close()


def test_watchdog_pings_stop_while_the_daemon_loop_is_blocked(short_tmp: Path) -> None:
    """Another process holds the store's write lock; the daemon's next write waits for it
    on the event loop (SQLite's busy timeout): no pings then, pings again after."""
    port = free_port()
    notify = NotifySocket(str(short_tmp / "notify"))
    proc = run_daemon(
        short_tmp,
        base_config(port),
        {"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": str(WATCHDOG_USEC)},
    )
    try:
        notify.wait_for(lambda f: f.get("READY") == "1")
        time.sleep(0.5)
        blocker = sqlite3.connect(short_tmp / "state" / "helpline.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        answers: list[int] = []
        poster = threading.Thread(target=lambda: answers.append(post_message(port, 1, 15)))
        poster.start()
        time.sleep(0.4)  # the request reaches the daemon and its loop blocks
        blocked_from = time.monotonic()
        time.sleep(1.5)  # several watchdog intervals
        blocked_until = time.monotonic()
        blocker.execute("ROLLBACK")
        blocker.close()
        poster.join(15)
        assert answers == [201]
        time.sleep(0.6)
        assert notify.pings(blocked_from, blocked_until) == []
        assert len(notify.pings(blocked_until, time.monotonic())) >= 2
        assert len(notify.pings(0, blocked_from)) >= 3
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        finally:
            if proc.poll() is None:
                proc.kill()
        notify.close()


def test_the_pinger_runs_on_the_loop(short_tmp: Path) -> None:
    """In process: pings every half interval, none while the loop sleeps in time.sleep."""
    notify = NotifySocket(str(short_tmp / "notify"))

    async def scenario() -> tuple[float, float]:
        task = asyncio.create_task(Notifier(notify.address).keep_alive(0.2))
        await asyncio.sleep(0.55)
        blocked_from = time.monotonic()
        time.sleep(0.8)  # noqa: ASYNC251 - the point: a loop blocked by a synchronous call
        blocked_until = time.monotonic()
        await asyncio.sleep(0.35)
        task.cancel()
        return blocked_from, blocked_until

    started = time.monotonic()
    try:
        blocked_from, blocked_until = asyncio.run(scenario())
        time.sleep(0.1)
        assert 5 <= len(notify.pings(started, blocked_from)) <= 7
        assert notify.pings(blocked_from + 0.01, blocked_until) == []
        assert len(notify.pings(blocked_until, time.monotonic())) >= 2
    finally:
        notify.close()


def test_without_systemd_nothing_is_sent() -> None:
    assert Notifier.from_env({}).ready("x") is False
    assert not Notifier.from_env({}).enabled
    assert watchdog_interval({}) == 0.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, pid=7) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, pid=7) == 0.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, pid=7) == 30.0


def test_a_broken_notify_socket_never_raises(short_tmp: Path) -> None:
    notifier = Notifier(str(short_tmp / "nobody-listens"))
    assert notifier.ready("x") is False
    assert notifier.watchdog() is False  # warned once, still no exception
