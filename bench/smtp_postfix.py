"""The `smtp` benchmark's Postfix baseline: a private instance that only queues (hold queue).

The recipe is the project's (PEERS.md section 5): a temp dir directly under /tmp
with mode 0755 (Postfix's own users must traverse it), its own main.cf and
master.cf, nothing chrooted, smtpd on a loopback port, started and stopped with
Postfix's own commands; /etc/postfix is neither read nor changed. Adapted for
the benchmark: every message is put on hold at DATA (`smtpd_data_restrictions =
check_client_access static:HOLD`), so smtpd and cleanup write each one to the
durable queue (fsync before the 250) and nothing is ever delivered; the whole
instance (master and every child) runs under `taskset` on the server core.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import orjson

from bench.procs import BenchError, pinned
from bench.smtp_load import wait_banner

POSTCONF = shutil.which("postconf") or "/usr/sbin/postconf"
POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
POSTQUEUE = shutil.which("postqueue") or "/usr/sbin/postqueue"
DOMAIN = "bench.example"


def postfix_version() -> str:
    done = subprocess.run(
        [POSTCONF, "-d", "-h", "mail_version"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip()


class HoldPostfix:
    """A Postfix of its own: smtpd on 127.0.0.1:`port`, every message for `DOMAIN` held."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="helpline-bench-postfix-", dir="/tmp"))
        self.etc = self.dir / "etc"
        self.started = False
        try:
            self._configure()
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def _postconf(self, *args: str) -> None:
        done = subprocess.run(
            [POSTCONF, "-c", str(self.etc), *args], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise BenchError(f"postconf {' '.join(args)[:200]} failed: {done.stderr.strip()}")

    def _configure(self) -> None:
        os.chmod(self.dir, 0o755)
        for sub in ("etc", "spool", "data"):
            (self.dir / sub).mkdir()
        shutil.chown(self.dir / "data", "postfix", "postfix")
        shutil.copy("/usr/share/postfix/master.cf.dist", self.etc / "master.cf")
        (self.etc / "main.cf").write_text("")
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": f"{self.dir}/spool",
            "data_directory": f"{self.dir}/data",
            "maillog_file_prefixes": str(self.dir),
            "maillog_file": f"{self.dir}/maillog",
            "syslog_name": "postfix-helpline-bench",
            "myhostname": "mx.helpline-bench.test",
            "mydomain": "helpline-bench.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "relay_domains": DOMAIN,
            "default_transport": "error:no outside delivery",
            # A route for DOMAIN (an error: transport would refuse it at RCPT); never used,
            # as every message is held, and the count of delivery attempts is checked as 0.
            "relay_transport": "smtp:[127.0.0.1]:9",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "smtpd_relay_restrictions": "permit_mynetworks,reject_unauth_destination",
            # Every message goes to the hold queue: written and fsynced, never delivered.
            "smtpd_data_restrictions": "check_client_access static:HOLD",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "biff": "no",
        }
        self._postconf("-e", *(f"{k}={v}" for k, v in settings.items()))
        self._postconf("-M", f"smtp/inet=127.0.0.1:{self.port} inet n - n - - smtpd")
        self._postconf("-F", "*/*/chroot = n")

    def start(self, core: int | None) -> None:
        """`postfix start` under taskset (master and all its children inherit the core)."""
        done = subprocess.run(
            pinned([POSTFIX, "-c", str(self.etc), "start"], core),
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        self.started = True  # stop() runs `postfix stop` even if start half-worked
        if done.returncode != 0:
            raise BenchError(
                f"postfix start failed (status {done.returncode}): {done.stdout}{done.stderr}"
                f"{self.log()[-2000:]}"
            )
        wait_banner(self.port, 20.0, "postfix")

    def master_pid(self) -> int | None:
        try:
            return int((self.dir / "spool" / "pid" / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def queues(self) -> dict[str, int]:
        """Messages per queue (hold, incoming, active, deferred) from `postqueue -j`."""
        done = subprocess.run(
            [POSTQUEUE, "-c", str(self.etc), "-j"],
            capture_output=True,
            check=False,
            timeout=120,
        )
        if done.returncode != 0:
            raise BenchError(f"postqueue -j failed: {done.stderr.decode(errors='replace')}")
        counts: dict[str, int] = {}
        for line in done.stdout.splitlines():
            if line.strip():
                name = str(orjson.loads(line).get("queue_name", "?"))
                counts[name] = counts.get(name, 0) + 1
        return counts

    def delivered(self) -> int:
        """Lines of the maillog that record a delivery attempt (status=...): must be none."""
        return sum(1 for line in self.log().splitlines() if " status=" in line)

    def log(self) -> str:
        path = self.dir / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """`postfix stop`, then remove the whole instance dir (its queue included)."""
        try:
            if self.started:
                pid = self.master_pid()
                subprocess.run(
                    [POSTFIX, "-c", str(self.etc), "stop"],
                    capture_output=True,
                    check=False,
                    timeout=30,
                )
                self._wait_gone(pid)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def _wait_gone(pid: int | None, timeout: float = 10.0) -> None:
        until = time.monotonic() + timeout
        while pid is not None and time.monotonic() < until:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
