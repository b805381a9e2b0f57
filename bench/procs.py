"""Start and stop the processes a benchmark owns: pinned to a core, stopped by their own pid.

Every child is started in its own session so a Ctrl-C at the terminal reaches
only the harness, which then stops its children in order (SIGTERM, wait,
SIGKILL) instead of leaving them to race each other.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Where `python -m bench.xxx` resolves: children run from the repository root wherever
# the harness was started.
REPO_ROOT = Path(__file__).resolve().parent.parent
DAEMON_CORE = 0
LOAD_CORE = 1


class BenchError(Exception):
    """Something broke (a process did not start, a load run failed): the run is invalid."""


def pinning_available() -> bool:
    """True when cores 0 and 1 are both ours, so server and load generator get one each."""
    try:
        allowed = os.sched_getaffinity(0)
    except OSError:
        return False
    return {DAEMON_CORE, LOAD_CORE} <= allowed


@dataclass(frozen=True)
class Cores:
    """The cores of the server and of the load generator (None: nothing pinned)."""

    server: int | None
    load: int | None

    @classmethod
    def pick(cls) -> Cores:
        """Cores 0 and 1 when both are ours; otherwise nothing is pinned."""
        return cls(DAEMON_CORE, LOAD_CORE) if pinning_available() else cls(None, None)

    def warnings(self) -> list[str]:
        if self.server is None:
            return ["cores 0 and 1 were not both available: nothing was pinned"]
        return []


def pinned(cmd: Sequence[str], core: int | None) -> list[str]:
    """`cmd` run under `taskset -c CORE`; unchanged when core is None (no pinning possible)."""
    if core is None:
        return list(cmd)
    return ["taskset", "-c", str(core), *cmd]


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (the daemon binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    """A process the harness started; `stop()` ends exactly this pid and nothing else."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    exit_code: int | None = None
    stopped_by: str = ""
    _log: object = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL: the daemon's own drain gets its chance."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
                self.stopped_by = "SIGTERM"
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                self.popen.wait(5)
                self.stopped_by = "SIGKILL"
        self.exit_code = self.popen.returncode
        closer = getattr(self._log, "close", None)
        if closer is not None:
            closer()
        return self.exit_code


def child_env() -> dict[str, str]:
    """Our environment with this checkout first on PYTHONPATH.

    So the daemon and the baseline import `gateway` from the checkout the harness
    lives in, not from wherever the virtualenv's editable install points.
    """
    env = dict(os.environ)
    rest = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = f"{REPO_ROOT}{os.pathsep}{rest}" if rest else str(REPO_ROOT)
    return env


def spawn(
    name: str, cmd: Sequence[str], log_path: Path, env: dict[str, str] | None = None
) -> Child:
    """Start `cmd` with stdout and stderr in `log_path`, in a session of its own."""
    log = log_path.open("wb")
    try:
        popen = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=child_env() if env is None else env,
            cwd=REPO_ROOT,
        )
    except OSError:
        log.close()
        raise
    return Child(name=name, popen=popen, log_path=log_path, _log=log)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET over loopback with the stdlib, so readiness polling needs no event loop."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read()


def wait_ready(child: Child, url: str, deadline: float = 30.0) -> bytes:
    """Poll `url` until it answers 200; fail clearly if the process exits or time runs out."""
    until = time.monotonic() + deadline
    last = "no answer yet"
    while time.monotonic() < until:
        if not child.alive():
            raise BenchError(
                f"{child.name} exited with status {child.popen.returncode} before it was ready; "
                f"its log ({child.log_path}) ends with:\n{child.log_tail()}"
            )
        try:
            status, body = http_get(url, timeout=1.0)
        except (OSError, urllib.error.URLError) as err:
            last = str(err)
        else:
            if status == 200:
                return body
            last = f"HTTP {status}: {body[:200]!r}"
        time.sleep(0.05)
    raise BenchError(
        f"{child.name} was not ready at {url} within {deadline:.0f} s (last: {last}); "
        f"its log ends with:\n{child.log_tail()}"
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU a live process has used, from /proc: shows who was the bottleneck."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def wait_exit(child: Child, timeout: float) -> None:
    """Until `child` exits; a timeout or a non-zero status makes the run invalid."""
    try:
        child.popen.wait(timeout)
    except Exception as err:
        child.stop(5)
        raise BenchError(
            f"{child.name} did not finish within {timeout:.0f} s; its log:\n{child.log_tail()}"
        ) from err
    child.stop()
    if child.exit_code != 0:
        raise BenchError(
            f"{child.name} exited with status {child.exit_code}; its log:\n{child.log_tail()}"
        )


def wait_line(child: Child, line: str, timeout: float) -> None:
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if line in child.log_tail(5).splitlines():
            return
        if not child.alive():
            break
        time.sleep(0.02)
    raise BenchError(f"{child.name} did not get ready; its log:\n{child.log_tail()}")
