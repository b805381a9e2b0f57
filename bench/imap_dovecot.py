"""The `imap` benchmark's mailbox: a private Dovecot in a temp dir under /tmp.

The recipe is the project's (PEERS.md section 1): a temp dir directly under
/tmp with mode 0755 (Dovecot's auth process runs as `dovecot` and must
traverse it), a short base_dir (unix socket paths are limited to 108 bytes),
everything logged to a file in the dir, mail owned by uid/gid 8 (Debian's
`mail`), one passwd-file user, plain IMAP on a free loopback port (no TLS: it
would cost helpline and the baseline watcher alike), and the master started
with `dovecot -F` so the pid held is the master's; /etc/dovecot is never read.
`mailbox_idle_check_interval = 1 secs` bounds how late an IDLE session hears
of a change inotify missed. The anvil auth penalty (2, 4, 8, 15 s delays after
failed logins from 127.0.0.1, which `auth_failure_delay = 0` alone does not
turn off) is disabled, so nothing a benchmark does can slow a later login.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from imapclient import IMAPClient

from bench.dovecot_conf import HOST, MAIL_GID, MAIL_UID, DovecotSetup
from bench.procs import BenchError, free_port, pinned

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USER = "support@bench.example"


def dovecot_version() -> str:
    try:
        done = subprocess.run(
            [DOVECOT, "--version"], capture_output=True, text=True, check=False, timeout=10
        )
    except OSError:
        return "not installed"
    return done.stdout.strip()


class BenchDovecot:
    """Dovecot on a free loopback port with one user, `USER`, and a random password."""

    def __init__(self) -> None:
        if not Path(DOVECOT).exists():
            raise BenchError(f"{DOVECOT} not found: install dovecot-imapd (Debian)")
        self.user = USER
        self.password = secrets.token_urlsafe(12)
        self.dir = Path(tempfile.mkdtemp(prefix="hl-bd-", dir="/tmp"))
        self.conf_path = self.dir / "dovecot.conf"
        self.log_path = self.dir / "dovecot.log"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        try:
            os.chmod(self.dir, 0o755)
            for sub in ("run", "state", "mail"):
                (self.dir / sub).mkdir()
            os.chown(self.dir / "mail", MAIL_UID, MAIL_GID)
            home = self.dir / "mail" / "support"
            (self.dir / "users").write_text(
                f"{self.user}:{{PLAIN}}{self.password}:{MAIL_UID}:{MAIL_GID}::{home}\n"
            )
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _write_conf(self) -> None:
        setup = DovecotSetup(self.dir, f"helpline-bench-{self.dir.name}", self.port)
        self.conf_path.write_text(setup.render())

    def start(self, core: int | None, deadline: float = 15.0) -> None:
        """`dovecot -F` under taskset on `core` (its children inherit it); return once it
        greets. A port taken between probe and bind is retried on another."""
        for attempt in range(3):
            self.port = free_port()
            self._write_conf()
            with (self.dir / "stderr.log").open("ab") as err:
                self._proc = subprocess.Popen(
                    pinned([DOVECOT, "-F", "-c", str(self.conf_path)], core),
                    stdin=subprocess.DEVNULL,
                    stdout=err,
                    stderr=err,
                    start_new_session=True,
                )
            if self._wait_banner(time.monotonic() + deadline):
                return
            self._proc = None
            if "in use" not in self.log() or attempt == 2:
                raise BenchError(f"dovecot did not start:\n{self.log()[-2000:]}")

    def _wait_banner(self, until: float) -> bool:
        """True once the IMAP greeting is read; False if the master exited first."""
        proc = self._proc
        last = "no answer yet"
        while time.monotonic() < until:
            if proc is None or proc.poll() is not None:
                return False
            try:
                with socket.create_connection((HOST, self.port), timeout=1) as sock:
                    banner = sock.recv(200)
                    if banner.startswith(b"* OK"):
                        sock.sendall(b"a LOGOUT\r\n")
                        return True
                    last = repr(banner[:100])
            except OSError as err:
                last = str(err)
            time.sleep(0.05)
        self.stop()
        raise BenchError(f"dovecot: no IMAP greeting on port {self.port} ({last})")

    def client(self, timeout: float = 10.0) -> IMAPClient:
        """A logged-in client (the caller logs out)."""
        imap = IMAPClient(HOST, self.port, ssl=False, timeout=timeout)
        imap.login(self.user, self.password)
        return imap

    def create_folder(self, name: str) -> None:
        imap = self.client()
        try:
            imap.create_folder(name)
        finally:
            with contextlib.suppress(Exception):
                imap.logout()

    def log(self) -> str:
        parts = []
        for name in ("stderr.log", "dovecot.log"):
            path = self.dir / name
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    def log_problems(self, limit: int = 5) -> list[str]:
        """Error and fatal lines of Dovecot's log (worth reading)."""
        lines = [
            line
            for line in self.log().splitlines()
            if ": Error:" in line or ": Fatal:" in line or ": Panic:" in line
        ]
        return lines[:limit]

    def stop(self) -> None:
        """SIGTERM to the master (its children follow), SIGKILL after 10 s; then the dir goes."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
