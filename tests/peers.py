"""Real protocol peers started by the tests: a private Postfix instance, swaks, and the
lifecycle every peer run as a child process shares (tests/dovecot.py, tests/rt.py).

Recipes from ../shared/PEERS.md: a temp dir directly under /tmp with mode 0755
(Postfix's own users must traverse it), nothing chrooted, readiness by the
peer's banner within a deadline, and a stop that runs the peer's own stop
command and removes the dir.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest

POSTCONF = shutil.which("postconf") or "/usr/sbin/postconf"
POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"


def need(*programs: str) -> None:
    """Skip with the reason when a peer is not installed (tests/run installs them as root)."""
    for program in programs:
        if not (shutil.which(program) or Path(f"/usr/sbin/{program}").exists()):
            pytest.skip(f"{program} is not installed (tests/run installs it when run as root)")


def wait_banner(port: int, prefix: bytes, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(100).startswith(prefix):
                    return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"no {prefix!r} banner on port {port}")


class PeerProcess:
    """A peer run as our child in a private temp dir: stopped by its pid (SIGTERM, then
    SIGKILL), the dir removed; a context manager that stops it even when start fails."""

    dir: Path
    pid: int | None
    _proc: subprocess.Popen[bytes] | None
    stop_timeout = 10.0
    kill_group = False  # a master with workers in its own session: SIGKILL them all

    def start(self) -> Self:
        raise NotImplementedError

    def log_files(self) -> list[Path]:
        raise NotImplementedError

    def _terminate(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                if self.kill_group:
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    def stop(self) -> None:
        if self._proc is not None:
            self._terminate(self._proc)
            self._proc = self.pid = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.log_files() if p.exists())


class PrivatePostfix:
    """A Postfix of its own: smtpd on 127.0.0.1:`port`, relaying `domains` to `next_hop`."""

    def __init__(self, port: int, domains: list[str], next_hop: str) -> None:
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="hl-postfix-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        etc = self.dir / "etc"
        for sub in ("etc", "spool", "data"):
            (self.dir / sub).mkdir()
        shutil.chown(self.dir / "data", "postfix", "postfix")
        shutil.copy("/usr/share/postfix/master.cf.dist", etc / "master.cf")
        (etc / "main.cf").write_text("")
        routes = ", ".join(f"{d}={next_hop}" for d in domains)
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": f"{self.dir}/spool",
            "data_directory": f"{self.dir}/data",
            "maillog_file_prefixes": str(self.dir),
            "maillog_file": f"{self.dir}/maillog",
            "syslog_name": "postfix-helpline-test",
            "myhostname": "mx.helpline-ci.test",
            "mydomain": "helpline-ci.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "relay_domains": " ".join(domains),
            "transport_maps": f"inline:{{ {routes} }}",
            "default_transport": "error:no outside delivery",
            "relay_transport": "error:no outside delivery",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "smtpd_relay_restrictions": "permit_mynetworks,reject_unauth_destination",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "lmtp_host_lookup": "native",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "5s",
            "biff": "no",
        }
        run = ["-c", str(etc)]
        subprocess.run(
            [POSTCONF, *run, "-e", *(f"{k}={v}" for k, v in settings.items())],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [POSTCONF, *run, "-M", f"smtp/inet=127.0.0.1:{port} inet n - n - - smtpd"],
            check=True,
            capture_output=True,
        )
        subprocess.run([POSTCONF, *run, "-F", "*/*/chroot = n"], check=True, capture_output=True)
        self._etc = etc

    def start(self) -> None:
        done = subprocess.run(
            [POSTFIX, "-c", str(self._etc), "start"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if done.returncode != 0:
            raise AssertionError(f"postfix start failed: {done.stdout}{done.stderr}{self.log()}")
        wait_banner(self.port, b"220", time.monotonic() + 20)

    def log(self) -> str:
        path = self.dir / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        subprocess.run(
            [POSTFIX, "-c", str(self._etc), "stop"], capture_output=True, check=False, timeout=30
        )
        shutil.rmtree(self.dir, ignore_errors=True)
