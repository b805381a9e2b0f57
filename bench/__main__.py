"""`python -m bench NAME... [--quick] [--runs N]`: run benchmarks, write JSON, update RESULTS.md.

Exit status: 0 when every run worked (speed is never asserted), 1 when
something broke (a process did not start, the load generator failed, non-2xx
answers, a durability check failed), 2 for a usage error, 130 on Ctrl-C.
Every process the harness started is stopped by its pid on the way out.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from bench import api, backends, identity, imap, machine, report, smtp
from bench.load import ensure_wrk, wrk_version
from bench.procs import REPO_ROOT, BenchError

BENCHMARKS: dict[str, Callable[..., report.Outcome]] = {
    "api": api.run,
    "backends": backends.run,
    "identity": identity.run,
    "imap": imap.run,
    "smtp": smtp.run,
}


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into an exception so every `finally` stops its processes.
    raise SystemExit(128 + signum)


def command_line(argv: Sequence[str], *, with_notes: bool = True) -> str:
    """The command as typed from the repository root (notes dropped: they change no figure)."""
    python = Path(sys.executable)
    try:
        shown = str(python.relative_to(Path.cwd()))
    except ValueError:
        shown = str(python)
    args = list(argv)
    if not with_notes:
        kept: list[str] = []
        skip = False
        for arg in args:
            if skip:
                skip = False
            elif arg == "--note":
                skip = True
            elif not arg.startswith("--note="):
                kept.append(arg)
        args = kept
    return shlex.join([shown, "-m", "bench", *args])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", metavar="NAME", choices=sorted(BENCHMARKS))
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short smoke run (CI): prints the table, writes the JSON, leaves RESULTS.md",
    )
    parser.add_argument(
        "--runs",
        type=int,
        help="api: product/baseline pairs (full: 5); identity: rounds (full: 3); "
        "smtp: rounds (full: 5); imap: pairs (full: 5, quick: 2); quick: 1",
    )
    parser.add_argument(
        "--seconds",
        type=int,
        help="seconds per measured run (full: 10; imap: 8, one APPEND every 200 ms)",
    )
    parser.add_argument(
        "--connections", type=int, help="concurrent clients (full: 50; smtp: sessions, 20)"
    )
    parser.add_argument(
        "--note", action="append", default=[], help="a line for the Notes of RESULTS.md"
    )
    return parser


def run_one(name: str, args: argparse.Namespace, argv: Sequence[str]) -> int:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    facts = machine.facts(Path(tempfile.gettempdir()), REPO_ROOT)
    facts["wrk"] = wrk_version(ensure_wrk())
    command = command_line(argv)
    print(f"bench {name}: {command}", flush=True)
    started = time.monotonic()
    outcome = BENCHMARKS[name](
        quick=args.quick,
        pairs=args.runs,
        seconds=args.seconds,
        connections=args.connections,
        progress=lambda line: print(f"  {line}", flush=True),
    )
    facts["loadavg_end"] = machine.load_average()
    data: dict[str, object] = {
        "benchmark": name,
        "timestamp": stamp,
        "quick": args.quick,
        "command": command,
        "argv": [sys.executable, "-m", "bench", *argv],
        "cwd": str(Path.cwd()),
        "elapsed_seconds": round(time.monotonic() - started, 1),
        "machine": facts,
        "notes": args.note,
        **outcome.data,
    }
    path = report.write_json(name, stamp, data)
    print()
    print(f"{outcome.title} ({outcome.settings})")
    print(report.table(outcome.figures))
    if outcome.extra:
        print()
        print(outcome.extra)
    for line in outcome.checks:
        print(f"  check: {line}")
    for line in outcome.warnings:
        print(f"  warning: {line}")
    for line in outcome.problems:
        print(f"  PROBLEM: {line}")
    print(f"raw numbers: {path}")
    if outcome.problems:
        print(f"bench {name}: the run is not valid (see PROBLEM lines)", file=sys.stderr)
        return 1
    if not args.quick:
        git = facts["git"]
        notes = [
            f"load average (1/5/15 min) at start {facts['loadavg_start']}, "
            f"at end {facts['loadavg_end']}; the machine is shared, so figures are noisy",
            *args.note,
        ]
        if isinstance(git, dict) and git.get("dirty"):
            notes.append("the working tree had uncommitted changes to tracked files")
        commit = str(git.get("commit", ""))[:12] if isinstance(git, dict) else ""
        when = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC at commit {commit}"
        text = report.section(
            outcome,
            when=when,
            machine=machine.one_line(facts),
            command=command_line(argv, with_notes=False),
            notes=notes,
        )
        report.update_results(name, text)
        print(f"updated {report.RESULTS}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    for number in ("runs", "seconds", "connections"):
        if getattr(args, number) is not None and getattr(args, number) < 1:
            print(f"--{number} must be at least 1", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    status = 0
    for name in args.names:
        try:
            status = max(status, run_one(name, args, argv))
        except BenchError as err:
            print(f"bench {name}: FAILED: {err}", file=sys.stderr)
            status = 1
        except KeyboardInterrupt:
            print(f"bench {name}: interrupted; its processes were stopped", file=sys.stderr)
            return 130
        except SystemExit as stop:
            print(f"bench {name}: terminated; its processes were stopped", file=sys.stderr)
            return int(stop.code or 1)
    return status


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
