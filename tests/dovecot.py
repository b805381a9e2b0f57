"""A private Dovecot IMAP server for the imap connector's tests.

Recipe from ../shared/PEERS.md section 1: a temp dir directly under /tmp with
mode 0755 (Dovecot's auth process runs as `dovecot` and must traverse it), a
short base_dir (unix socket paths are limited to 108 bytes), everything logged
to a file in the dir, mail owned by uid/gid 8 (`mail`), and a master started
with -F so the pid we hold is the master's. /etc/dovecot is never read.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from imapclient import IMAPClient

from bench.dovecot_conf import HOST, MAIL_GID, MAIL_UID, DovecotSetup
from tests.peers import PeerProcess, wait_banner

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"

Security = Literal["starttls", "imaps", "plain"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class PrivateDovecot(PeerProcess):
    """Dovecot on two free loopback ports: `port` (IMAP, STARTTLS offered) and `imaps_port`.

    Users log in with their password (PLAIN/LOGIN). With `introspection_url`
    they can also log in with XOAUTH2/OAUTHBEARER: Dovecot's oauth2 passdb
    POSTs the bearer token to that RFC 7662 endpoint and accepts it when the
    answer says `"active": true` with a `username` equal to the login name.

    A refused login is answered within 0.5 s (Dovecot flushes failures on
    that tick). Stopping takes about 1.1 s because Dovecot's master sleeps a fixed second
    while its children exit, so share one instance per test module.
    """

    def __init__(
        self,
        users: dict[str, str],
        introspection_url: str | None = None,
        *,
        debug: bool = False,
    ) -> None:
        self.users = dict(users)
        self.introspection_url = introspection_url
        self.dir = Path(tempfile.mkdtemp(prefix="hl-dc-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.instance_name = f"helpline-{self.dir.name}"
        self.conf_path = self.dir / "dovecot.conf"
        self.cert_path = self.dir / "cert.pem"
        self.key_path = self.dir / "key.pem"
        self.log_path = self.dir / "dovecot.log"
        self.port = 0
        self.imaps_port = 0
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._debug = debug
        for sub in ("run", "state", "mail"):
            (self.dir / sub).mkdir()
        os.chown(self.dir / "mail", MAIL_UID, MAIL_GID)
        self._write_cert()
        self._write_users()
        if introspection_url:
            self._write_oauth2(introspection_url)

    # -- setup -----------------------------------------------------------

    def _write_cert(self) -> None:
        # EC keys are generated in milliseconds (RSA takes noticeably longer);
        # the SAN lets a verifying client connect to 127.0.0.1.
        subprocess.run(
            [
                OPENSSL,
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=IP:127.0.0.1,DNS:localhost",
                "-keyout",
                str(self.key_path),
                "-out",
                str(self.cert_path),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        os.chmod(self.cert_path, 0o644)

    def _write_users(self) -> None:
        lines = []
        for user, password in self.users.items():
            if any(c in user + password for c in ":\n"):
                raise ValueError(f"passwd-file cannot hold {user!r} / its password")
            home = self.dir / "mail" / user
            lines.append(f"{user}:{{PLAIN}}{password}:{MAIL_UID}:{MAIL_GID}::{home}\n")
        (self.dir / "users").write_text("".join(lines))

    def _write_oauth2(self, url: str) -> None:
        # No tokeninfo_url: Dovecot then goes straight to introspection.
        settings = {
            "introspection_mode": "post",
            "introspection_url": url,
            "username_attribute": "username",
            "active_attribute": "active",
            "active_value": "true",
            "timeout_msecs": "5000",
            "debug": "yes" if self._debug else "no",
        }
        text = "".join(f"{k} = {v}\n" for k, v in settings.items())
        (self.dir / "dovecot-oauth2.conf.ext").write_text(text)

    def _write_conf(self) -> None:
        setup = DovecotSetup(
            self.dir,
            self.instance_name,
            self.port,
            imaps_port=self.imaps_port,
            tls=(self.cert_path, self.key_path),
            oauth_conf=self.dir / "dovecot-oauth2.conf.ext" if self.introspection_url else None,
            debug=self._debug,
        )
        self.conf_path.write_text(setup.render())

    # -- lifecycle -------------------------------------------------------

    def start(self, timeout: float = 15.0) -> PrivateDovecot:
        """Start on fresh free ports; ports taken between probe and bind are retried."""
        for attempt in range(3):
            self.port, self.imaps_port = _free_port(), _free_port()
            self._write_conf()
            stderr = (self.dir / "stderr.log").open("wb")
            with stderr:
                proc = subprocess.Popen(
                    [DOVECOT, "-F", "-c", str(self.conf_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=stderr,
                    stderr=stderr,
                )
            self._proc, self.pid = proc, proc.pid
            if self._wait_ready(proc, time.monotonic() + timeout):
                return self
            self._proc = self.pid = None
            output = self.log()
            if "in use" not in output or attempt == 2:
                raise AssertionError(f"dovecot did not start (exit {proc.returncode}):\n{output}")
        raise AssertionError("unreachable")

    def _wait_ready(self, proc: subprocess.Popen[bytes], deadline: float) -> bool:
        """True once the banner is seen; False if the master exited first."""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                wait_banner(self.port, b"* OK", min(deadline, time.monotonic() + 0.2))
                return True
            except AssertionError:
                continue
        self._terminate(proc)
        raise AssertionError(f"no IMAP banner on port {self.port} in time:\n{self.log()}")

    def log_files(self) -> list[Path]:
        return [self.dir / "stderr.log", self.dir / "dovecot.log"]

    # -- clients ---------------------------------------------------------

    def ssl_context(self, verify: bool = True) -> ssl.SSLContext:
        """A context trusting this instance's self-signed cert (or trusting nothing)."""
        if not verify:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        return ssl.create_default_context(cafile=str(self.cert_path))

    def client(self, user: str, security: Security = "plain", timeout: float = 10) -> IMAPClient:
        """A client logged in as `user` with its password (caller logs out)."""
        if security == "imaps":
            imap = IMAPClient(
                HOST, self.imaps_port, ssl=True, ssl_context=self.ssl_context(), timeout=timeout
            )
        else:
            imap = IMAPClient(HOST, self.port, ssl=False, timeout=timeout)
            if security == "starttls":
                imap.starttls(self.ssl_context())
        imap.login(user, self.users[user])
        return imap

    # -- mailbox helpers (setup and assertions in tests) -----------------

    def append(self, user: str, folder: str, raw: bytes, flags: Iterable[str] = ()) -> int:
        """APPEND as `user`; the UID comes from the UIDPLUS APPENDUID answer."""
        with self.client(user) as imap:
            answer = imap.append(folder, raw, flags=tuple(flags))
        found = re.search(rb"\[APPENDUID \d+ (\d+)\]", answer)
        if found is None:
            raise AssertionError(f"no APPENDUID in {answer!r}")
        return int(found.group(1))

    def create_folder(self, user: str, name: str) -> None:
        with self.client(user) as imap:
            imap.create_folder(name)
            imap.subscribe_folder(name)

    def uids(self, user: str, folder: str, criteria: str = "ALL") -> list[int]:
        with self.client(user) as imap:
            imap.select_folder(folder, readonly=True)
            return sorted(int(uid) for uid in imap.search(criteria))

    def flags(self, user: str, folder: str, uid: int) -> set[str]:
        with self.client(user) as imap:
            imap.select_folder(folder, readonly=True)
            got = imap.get_flags([uid])
        return {f.decode() if isinstance(f, bytes) else str(f) for f in got.get(uid, ())}

    def uidvalidity(self, user: str, folder: str) -> int:
        with self.client(user) as imap:
            status = imap.folder_status(folder, [b"UIDVALIDITY"])
        return int(status[b"UIDVALIDITY"])

    def change_uidvalidity(self, user: str, folder: str, new: int | None = None) -> int:
        """Give `folder` a new UIDVALIDITY, keeping its messages; returns the new value.

        `doveadm mailbox update --uid-validity` works on 2.3 while the server
        runs; an IMAP session that has the folder selected is disconnected.
        """
        value = new if new is not None else self.uidvalidity(user, folder) + 1000
        self.doveadm("mailbox", "update", "--uid-validity", str(value), "-u", user, folder)
        return value

    def doveadm(self, *args: str) -> str:
        done = subprocess.run(
            [DOVEADM, "-c", str(self.conf_path), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if done.returncode != 0:
            raise AssertionError(f"doveadm {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout
