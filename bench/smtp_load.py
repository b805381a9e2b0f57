"""The `smtp` benchmark's load generator: Postfix's smtp-source, timed by its wall clock.

smtp-source (C, from the postfix package) opens `sessions` parallel SMTP
sessions and sends a fixed number of messages of a fixed length, one message
per connection (connect, EHLO, MAIL, RCPT, DATA, QUIT), and exits; with `-c`
it prints a running count of completed DATA commands. It exits non-zero at the
first answer that is not 2xx (a 4xx or 5xx is fatal to it), so a clean exit
means every message got its 250. It reports no latency: the rate is messages ÷
the wall clock around the whole process.
"""

from __future__ import annotations

import re
import resource
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.procs import BenchError, pinned

SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
SENDER = "sender@client.example"
RECIPIENT = "rcpt@bench.example"
MESSAGE_BYTES = 5120


def ensure_smtp_source() -> str:
    if not Path(SMTP_SOURCE).exists():
        raise BenchError(
            f"{SMTP_SOURCE} not found: it comes with Postfix (`apt-get install -y postfix`)"
        )
    return SMTP_SOURCE


def wait_banner(
    port: int, deadline: float, what: str, alive: Callable[[], bool] | None = None
) -> None:
    """Until a 220 greeting on 127.0.0.1:`port`; fail at once if `alive()` turns False."""
    until = time.monotonic() + deadline
    last = "no answer yet"
    while time.monotonic() < until:
        if alive is not None and not alive():
            raise BenchError(f"{what} exited before it greeted on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                banner = sock.recv(200)
                if banner.startswith(b"220"):
                    sock.sendall(b"QUIT\r\n")
                    return
                last = repr(banner[:100])
        except OSError as err:
            last = str(err)
        time.sleep(0.05)
    raise BenchError(f"{what}: no 220 greeting on port {port} within {deadline:.0f} s ({last})")


def cpu_busy(cores: tuple[int, ...]) -> dict[int, tuple[int, int]]:
    """(busy, total) clock ticks per core so far, from /proc/stat."""
    out: dict[int, tuple[int, int]] = {}
    with open("/proc/stat", encoding="ascii") as fh:
        for line in fh:
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            core = int(name[3:])
            if core in cores:
                ticks = [int(x) for x in fields]
                idle = ticks[3] + ticks[4]  # idle + iowait
                out[core] = (sum(ticks[:8]) - idle, sum(ticks[:8]))
    return out


def busy_share(
    before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], core: int | None
) -> float | None:
    """How busy `core` was between two cpu_busy() samples (0..1; None: not pinned)."""
    if core is None or core not in before or core not in after:
        return None
    busy = after[core][0] - before[core][0]
    total = after[core][1] - before[core][1]
    return busy / total if total else None


@dataclass
class SourceRun:
    """One smtp-source run: how many messages, how long, what it printed."""

    messages: int
    sessions: int
    seconds: float
    completed: int  # the last value of its -c counter (DATA commands completed)
    exit_code: int
    server_core_busy: float | None
    load_core_busy: float | None
    source_cpu_seconds: float  # smtp-source's own user + system CPU
    command: list[str]
    output_tail: str

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    @property
    def source_cpu_share(self) -> float:
        return self.source_cpu_seconds / self.seconds if self.seconds else 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "messages": self.messages,
            "sessions": self.sessions,
            "seconds": round(self.seconds, 3),
            "msg_per_s": round(self.rate, 1),
            "completed_counter": self.completed,
            "exit_code": self.exit_code,
            "server_core_busy": None
            if self.server_core_busy is None
            else round(self.server_core_busy, 3),
            "load_core_busy": None
            if self.load_core_busy is None
            else round(self.load_core_busy, 3),
            "command": self.command,
        }


def _last_count(text: str) -> int:
    numbers = re.findall(r"\d+", text.replace("\r", "\n"))
    return int(numbers[-1]) if numbers else 0


def run_smtp_source(
    port: int,
    messages: int,
    *,
    sessions: int,
    load_core: int | None,
    server_core: int | None,
    timeout: float,
) -> SourceRun:
    """smtp-source pinned to `load_core` against 127.0.0.1:`port`; fails on any non-2xx."""
    cmd = pinned(
        [
            ensure_smtp_source(),
            "-c",
            "-l",
            str(MESSAGE_BYTES),
            "-m",
            str(messages),
            "-s",
            str(sessions),
            "-f",
            SENDER,
            "-t",
            RECIPIENT,
            f"127.0.0.1:{port}",
        ],
        load_core,
    )
    cores = tuple(c for c in (server_core, load_core) if c is not None)
    before = cpu_busy(cores)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, check=False, timeout=timeout, errors="replace"
        )
    except subprocess.TimeoutExpired as err:
        raise BenchError(
            f"smtp-source did not finish {messages} messages in {timeout:.0f} s"
        ) from err
    seconds = time.monotonic() - started
    after = cpu_busy(cores)
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    source_cpu = used.ru_utime - usage.ru_utime + used.ru_stime - usage.ru_stime
    output = (done.stdout or "") + (done.stderr or "")
    run = SourceRun(
        messages=messages,
        sessions=sessions,
        seconds=seconds,
        completed=_last_count(done.stdout or ""),
        exit_code=done.returncode,
        server_core_busy=busy_share(before, after, server_core),
        load_core_busy=busy_share(before, after, load_core),
        source_cpu_seconds=source_cpu,
        command=cmd,
        output_tail=output[-500:].replace("\r", "\n").strip(),
    )
    if done.returncode != 0:
        raise BenchError(
            f"smtp-source failed (status {done.returncode}) on port {port}: "
            f"{(done.stderr or '').strip()[-800:]}"
        )
    return run
