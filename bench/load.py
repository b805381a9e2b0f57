"""The load generator: wrk (C, LuaJIT) in its own process on its own core, and its parser.

wrk rather than a Python client: one core of asyncio/aiohttp client cannot
send requests as fast as one core of bare aiohttp answers them, so a Python
generator would cap the baseline and flatter every ratio. The Lua script
(messages.lua) builds a distinct body and Idempotency-Key for every request and
prints its figures as one parseable line.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from bench.procs import LOAD_CORE, BenchError, pinned

SCRIPT = Path(__file__).with_name("messages.lua")
MARKER = "BENCH_RESULT "
WRK_TIMEOUT = "10s"


def ensure_wrk() -> str:
    """The wrk binary; installed from Debian when missing and we are root (as in CI)."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BenchError("wrk is not installed: run `apt-get install -y wrk` (Debian) first")
    print("bench: wrk not found, installing it with apt-get (Debian package wrk)", flush=True)
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, env=env, check=False, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=False, capture_output=True)
        done = subprocess.run(install, env=env, check=False, capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchError(f"apt-get install wrk failed:\n{done.stdout[-2000:]}{done.stderr}")
    found = shutil.which("wrk")
    if not found:
        raise BenchError("apt-get installed wrk but it is not on PATH")
    return found


def wrk_version(binary: str) -> str:
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return (
        (done.stdout or done.stderr).splitlines()[0].strip() if (done.stdout or done.stderr) else ""
    )


@dataclass
class LoadResult:
    """What one wrk run measured, in the units the report uses."""

    seconds: float
    requests: int
    sent: int
    statuses: dict[int, int]
    errors: dict[str, int]
    latency_ms: dict[str, float]
    cpu_seconds: float
    command: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def non_2xx(self) -> int:
        return sum(n for code, n in self.statuses.items() if not 200 <= code < 300)

    @property
    def socket_errors(self) -> int:
        return sum(n for kind, n in self.errors.items() if kind != "status")

    def count(self, status: int) -> int:
        return self.statuses.get(status, 0)

    def as_json(self) -> dict[str, object]:
        return {
            "seconds": round(self.seconds, 3),
            "requests": self.requests,
            "sent": self.sent,
            "rps": round(self.rps, 1),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "non_2xx": self.non_2xx,
            "errors": self.errors,
            "latency_ms": self.latency_ms,
            "load_generator_cpu_seconds": round(self.cpu_seconds, 3),
            "command": self.command,
        }


def parse_output(stdout: str) -> dict[str, object]:
    """The JSON object on the script's BENCH_RESULT line."""
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            data = orjson.loads(line[len(MARKER) :])
            if isinstance(data, dict):
                return data
    raise BenchError(f"wrk printed no {MARKER.strip()} line; its output was:\n{stdout[-2000:]}")


def to_result(data: dict[str, object], cpu: float, command: list[str]) -> LoadResult:
    latency = data["latency_us"]
    errors = data["errors"]
    statuses = data["statuses"]
    if not (isinstance(latency, dict) and isinstance(errors, dict) and isinstance(statuses, dict)):
        raise BenchError(f"unexpected {MARKER.strip()} line from wrk: {data}")
    return LoadResult(
        seconds=float(str(data["duration_us"])) / 1e6,
        requests=int(str(data["requests"])),
        sent=int(str(data["sent"])),
        statuses={int(k): int(v) for k, v in statuses.items()},
        errors={str(k): int(v) for k, v in errors.items()},
        latency_ms={str(k): round(float(v) / 1000.0, 3) for k, v in latency.items()},
        cpu_seconds=cpu,
        command=command,
    )


def run_wrk(
    url: str,
    *,
    token: str,
    tag: str,
    seconds: int,
    connections: int,
    threads: int = 1,
    core: int | None = LOAD_CORE,
    script: Path = SCRIPT,
    script_args: Sequence[str] = (),
) -> LoadResult:
    """One wrk run against `url` with `script` (by default messages.lua), pinned to `core`.

    The script gets the token, the tag and then `script_args` after wrk's `--`.
    """
    cmd = pinned(
        [
            ensure_wrk(),
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--timeout",
            WRK_TIMEOUT,
            "-s",
            str(script),
            url,
            "--",
            token,
            tag,
            *script_args,
        ],
        core,
    )
    return run_command(cmd, token=token, seconds=seconds)


def run_command(cmd: list[str], *, token: str, seconds: int) -> LoadResult:
    """Run a prepared wrk command line of a `seconds` run, measure its CPU, parse its result."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
    except subprocess.TimeoutExpired as err:
        raise BenchError(f"wrk did not finish within {seconds + 60} s") from err
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise BenchError(f"wrk exited with {done.returncode}:\n{done.stdout}\n{done.stderr}")
    shown = [part if part != token else "TOKEN" for part in cmd]
    return to_result(parse_output(done.stdout), cpu, shown)


def non_2xx_codes(runs: Iterable[LoadResult]) -> dict[int, int]:
    """How many answers of each non-2xx status the runs got, added up."""
    codes: dict[int, int] = {}
    for run in runs:
        for code, n in run.statuses.items():
            if not 200 <= code < 300:
                codes[code] = codes.get(code, 0) + n
    return codes
