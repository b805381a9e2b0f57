"""Socket activation the way systemd does it, with this test as systemd.

The harness binds the listening sockets itself and holds them, passes them to
`helpline run` as file descriptors 3 and up with LISTEN_FDS, LISTEN_FDNAMES and
LISTEN_PID (a tiny exec wrapper moves them to 3.. and sets LISTEN_PID to its own
pid, which exec keeps), and restarts the daemon on the same sockets while
clients keep connecting: the kernel queues connections on the held socket while
no process accepts, so none is refused.
"""

from __future__ import annotations

import http.client
import os
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from gateway.socket_activation import Inherited, SocketActivationError, receive
from tests.conftest import REPO, TOKENS, base_config, message

# Runs in the child: move the passed fds to 3.., say so in LISTEN_*, exec helpline.
WRAPPER = """
import fcntl, os, sys
fds = [int(fd) for fd in sys.argv[1].split(",")]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in fds]
for fd in fds:
    os.close(fd)
for index, fd in enumerate(high):
    os.dup2(fd, 3 + index, inheritable=True)
    os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(len(fds)), LISTEN_FDNAMES=sys.argv[2])
os.execv(sys.executable, [sys.executable, "-m", "gateway", *sys.argv[3:]])
"""

MX = """[connectors.mx]
type = "smtp"
listen = "systemd:smtp"
recipients = ["support@example.com"]
"""
CONFIG = base_config(0, MX).replace('listen = "127.0.0.1:0"', 'listen = "systemd:http"', 1)


def listener() -> socket.socket:
    """A listening socket as a .socket unit makes one (Backlog= defaults to SOMAXCONN)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(socket.SOMAXCONN)
    return sock


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


class Activated:
    """`helpline run` started on held sockets, as systemd starts a socket-activated unit."""

    def __init__(self, tmp: Path, config: str, sockets: dict[str, socket.socket]) -> None:
        self.tmp, self.sockets = tmp, sockets
        (tmp / "helpline.toml").write_text(config)
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.tmp / f"daemon{self.starts}.log"

    def start(self) -> subprocess.Popen[bytes]:
        self.starts += 1
        fds = [sock.fileno() for sock in self.sockets.values()]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    *(
                        sys.executable,
                        "-c",
                        WRAPPER,
                        ",".join(map(str, fds)),
                        ":".join(self.sockets),
                    ),
                    *("run", "--config", str(self.tmp / "helpline.toml")),
                    *("--state-dir", str(self.tmp / "state"), "--log-format", "json"),
                ],
                pass_fds=fds,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                cwd=REPO,
            )
        return self.proc

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode}: {self.log.read_text()}")
            if '"daemon.ready"' in self.log.read_text():
                return
            time.sleep(0.02)
        raise AssertionError(f"not ready in {timeout}s: {self.log.read_text()}")

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


def post(port: int, n: int) -> int:
    """POST /v1/messages on a new connection: the status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        headers = {"Authorization": f"Bearer {TOKENS['main']}", "Content-Type": "application/json"}
        conn.request("POST", "/v1/messages", orjson.dumps(message(n)), headers)
        return conn.getresponse().status
    finally:
        conn.close()


def send_mail(port: int, n: int) -> None:
    mail = (
        f"From: Customer {n} <customer{n}@example.org>\r\nTo: support@example.com\r\n"
        f"Subject: question {n}\r\nMessage-ID: <mail{n}@example.org>\r\n\r\n"
        f"Hello, this is mail number {n}.\r\n"
    )
    with smtplib.SMTP(timeout=15) as client:
        code, _ = client.connect("127.0.0.1", port)  # the greeting: the connection is served
        if code != 220:
            raise smtplib.SMTPConnectError(code, "no greeting")
        try:
            client.sendmail(f"customer{n}@example.org", ["support@example.com"], mail.encode())
        except (smtplib.SMTPResponseException, smtplib.SMTPServerDisconnected, OSError) as err:
            if isinstance(err, smtplib.SMTPResponseException) and err.smtp_code != 421:
                raise
            raise SessionCut(str(err)) from err


class SessionCut(Exception):
    """An SMTP session the old daemon's stop cut after the greeting (421, or a close)."""


def messages(tmp: Path) -> int:
    """Inbound messages in the stream (a new customer's also opens a conversation)."""
    with sqlite3.connect(tmp / "state" / "helpline.db") as db:
        rows = db.execute("SELECT body FROM events").fetchall()
    return sum(orjson.loads(body)["type"] == "helpline.message.inbound.v1" for (body,) in rows)


def test_serves_smtp_and_http_on_passed_sockets(tmp_path: Path) -> None:
    sockets = {"smtp": listener(), "spare": listener(), "http": listener()}
    daemon = Activated(tmp_path, CONFIG, sockets)
    daemon.start()
    try:
        daemon.wait_ready()
        send_mail(port_of(sockets["smtp"]), 1)  # 250 for the mail, or smtplib raises
        assert post(port_of(sockets["http"]), 1) == 201
        # A reload that restarts the connector: it takes systemd's socket again.
        (tmp_path / "helpline.toml").write_text(
            CONFIG.replace("recipients", "timeout = 60\nrecipients")
        )
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while '"daemon.reloaded"' not in daemon.log.read_text():
            assert time.monotonic() < deadline, daemon.log.read_text()
            time.sleep(0.02)
        assert '"connectors.mx"' in daemon.log.read_text().split('"daemon.reloaded"')[0][-300:]
        send_mail(port_of(sockets["smtp"]), 2)
    finally:
        assert daemon.stop() == 0
        for sock in sockets.values():
            sock.close()
    log = daemon.log.read_text()
    assert '"systemd.socket_unused"' in log and '"name": "spare"' in log
    assert "LISTEN_FDS" not in log
    assert messages(tmp_path) == 3


def test_the_environment_is_for_one_process_only() -> None:
    """LISTEN_* are removed once read, and ignored when LISTEN_PID is another process."""
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "http:smtp", "PATH": "/bin"}
    assert receive(env, pid=4242).names() == []
    assert env == {"PATH": "/bin"}
    env = {"LISTEN_PID": "4242", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "http"}
    with pytest.raises(SocketActivationError, match="names 1 sockets but LISTEN_FDS is 2"):
        receive(env, pid=4242)
    with pytest.raises(SocketActivationError, match=r"'x' was passed by systemd \(systemd passed"):
        Inherited({}).take("x")


def test_a_socket_name_not_passed_stops_the_start(tmp_path: Path) -> None:
    """A config naming a socket systemd did not pass exits with EX_CONFIG (78), naming the
    sockets that were passed; systemd's RestartPreventExitStatus=78 stops a restart loop."""
    sockets = {"web": listener()}
    daemon = Activated(tmp_path, CONFIG, sockets)
    try:
        assert daemon.start().wait(20) == 78
    finally:
        sockets["web"].close()
    output = daemon.log.read_text()
    assert "systemd:http" in output and "passed: web" in output, output


def test_restart_refuses_no_connection(tmp_path: Path) -> None:
    """SIGTERM and a new start on the same held sockets, under a steady stream of HTTP and
    SMTP clients: every connection is served by one daemon or the next, none refused."""
    sockets = {"http": listener(), "smtp": listener()}
    daemon = Activated(tmp_path, CONFIG, sockets)
    daemon.start()
    daemon.wait_ready()
    results: Counter[str] = Counter()
    served: list[tuple[float, float]] = []  # when each HTTP request began and was answered
    errors: list[str] = []
    running = threading.Event()
    running.set()

    def http_client(first: int) -> None:
        n = first
        while running.is_set():
            n += 1
            try:
                begun = time.monotonic()
                status = post(port_of(sockets["http"]), n)
                served.append((begun, time.monotonic()))
                results["http" if status == 201 else f"http {status}"] += 1
            except Exception as err:
                errors.append(f"http: {type(err).__name__}: {err}")
            time.sleep(0.01)

    def smtp_client(first: int) -> None:
        n = first
        while running.is_set():
            n += 1
            try:
                send_mail(port_of(sockets["smtp"]), n)
                results["smtp"] += 1
            except SessionCut:
                # The old daemon's stop lets a session that has just been greeted, or has a
                # mail under way, finish it: a cut here is a failure (an MTA would retry
                # only minutes later), counted and asserted to be zero.
                results["smtp cut"] += 1
                n -= 1
            except Exception as err:
                errors.append(f"smtp: {type(err).__name__}: {err}")
            time.sleep(0.01)

    clients = [
        threading.Thread(target=f, args=(first,))
        for f, first in ((http_client, 0), (http_client, 100_000), (smtp_client, 200_000))
    ]
    try:
        for client in clients:
            client.start()
        time.sleep(0.5)
        before = dict(results)
        assert daemon.stop() == 0
        gap = time.monotonic()  # from here no process accepts until the next is ready
        daemon.start()
        daemon.wait_ready()
        gap_ended = time.monotonic()
        restarted = dict(results)
        time.sleep(0.5)
    finally:
        running.clear()
        for client in clients:
            client.join(30)
        daemon.stop()
        for sock in sockets.values():
            sock.close()
    # Connections were made while no daemon ran, waited in the kernel's queue, were served.
    queued = [(a, b) for a, b in served if a < gap and b > gap + 0.2]
    print(f"gap {gap_ended - gap:.2f}s, {len(queued)} queued, {dict(results)}")  # noqa: T201
    assert errors == [], errors[:5]
    assert results["http"] and results["smtp"] and results["smtp cut"] == 0, results
    assert before["http"] >= 5 and results["http"] > restarted["http"], (before, results)
    assert queued, (gap, gap_ended)
    assert messages(tmp_path) == results["http"] + results["smtp"]
