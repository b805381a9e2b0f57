"""The disk's raw single-fsync rate: the physical limit a durable commit is judged against.

Appends 1 KB and fsyncs, in a loop, for about two seconds, on a file in the
same directory as the daemon's store (so the same filesystem and disk), run as
its own process pinned to the daemon's core. Group commit lets the daemon
store more messages per second than this rate; one fsync per message cannot.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import orjson

from bench.procs import DAEMON_CORE, REPO_ROOT, BenchError, child_env, pinned

RECORD = b"x" * 1023 + b"\n"


def measure(directory: Path, seconds: float = 2.0) -> dict[str, float]:
    """fsyncs per second (1 KB appended before each) and their p50/p99 in ms."""
    path = directory / "fsync-rate.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    times: list[float] = []
    try:
        started = time.perf_counter()
        until = started + seconds
        now = started
        while now < until:
            os.write(fd, RECORD)
            os.fsync(fd)
            after = time.perf_counter()
            times.append(after - now)
            now = after
        elapsed = now - started
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    cuts = statistics.quantiles(times, n=100, method="inclusive") if len(times) > 1 else times * 99
    return {
        "seconds": round(elapsed, 3),
        "fsyncs": len(times),
        "rate": round(len(times) / elapsed, 1),
        "p50_ms": round(cuts[49] * 1000, 4),
        "p99_ms": round(cuts[98] * 1000, 4),
    }


def run_pinned(directory: Path, seconds: float, core: int | None = DAEMON_CORE) -> dict[str, float]:
    """`measure` in a separate process on the daemon's core, as the daemon's commits run."""
    cmd = pinned([sys.executable, "-m", "bench.fsync_rate", str(directory), str(seconds)], core)
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
        cwd=REPO_ROOT,
        env=child_env(),
    )
    if done.returncode != 0:
        raise BenchError(f"the fsync baseline failed ({done.returncode}):\n{done.stderr}")
    data = orjson.loads(done.stdout)
    return {str(k): float(v) for k, v in data.items()}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="append 1 KB + fsync in a loop; print JSON")
    parser.add_argument("directory", type=Path)
    parser.add_argument("seconds", type=float, nargs="?", default=2.0)
    args = parser.parse_args(argv)
    print(orjson.dumps(measure(args.directory, args.seconds)).decode())


if __name__ == "__main__":
    main()
