"""Instructions per ingested message, counted by callgrind: `python -m bench.instructions`.

On a shared machine two timed runs of the same code differ by 10 to 40%, more than
most changes to the ingest path gain. callgrind counts instructions, which do not
depend on what else the machine does: bench/ingest_loop.py runs under it with a small
and a large message count, and the difference divided by the difference in messages
is the cost of one message, start-up excluded. `--rev REV` counts a git revision of
this checkout's gateway the same way (from a temporary worktree, with this checkout's
loop), for a before/after pair.

Not a TARGETS.md figure (those are ratios of timed runs of the real daemon); a way
to see whether a change to the core made a message cheaper, and by how much.
Needs valgrind (Debian package `valgrind`); a count takes about a minute.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.procs import REPO_ROOT, BenchError

SMALL, LARGE = 500, 1500
_COLLECTED = re.compile(r"Collected : (\d+)")
# This checkout's loop, run as a script, so an older revision's gateway can be counted
# with the same loop (PYTHONPATH points at that revision).
_LOOP = (sys.executable, str(Path(__file__).with_name("ingest_loop.py")))


def instructions(checkout: Path, count: int) -> int:
    """Instructions of one run of the ingest loop of `checkout` over `count` messages."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise BenchError("valgrind is not installed: run `apt-get install -y valgrind` first")
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run(
        [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", *_LOOP, str(count)],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise BenchError(f"the ingest loop failed under callgrind:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_message(checkout: Path, small: int, large: int) -> float:
    return (instructions(checkout, large) - instructions(checkout, small)) / (large - small)


def _at_revision(rev: str, small: int, large: int) -> float:
    with tempfile.TemporaryDirectory(prefix="helpline-instructions-") as temp:
        tree = Path(temp) / "tree"
        git = ["git", "-C", str(REPO_ROOT)]
        subprocess.run([*git, "worktree", "add", "--detach", str(tree), rev], check=True)
        try:
            return per_message(tree, small, large)
        finally:
            subprocess.run([*git, "worktree", "remove", "--force", str(tree)], check=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", help="also count this git revision (before/after)")
    parser.add_argument("--small", type=int, default=SMALL)
    parser.add_argument("--large", type=int, default=LARGE)
    args = parser.parse_args(argv)
    if not 0 < args.small < args.large:
        parser.error("--small must be positive and below --large")
    try:
        here = per_message(REPO_ROOT, args.small, args.large)
        print(f"this checkout: {here:,.0f} instructions per message")
        if args.rev:
            then = _at_revision(args.rev, args.small, args.large)
            print(f"{args.rev}: {then:,.0f} instructions per message")
            print(f"this checkout / {args.rev}: {here / then:.3f}")
    except BenchError as err:
        print(f"bench.instructions: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
