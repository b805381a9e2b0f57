"""The `identity` benchmark's measured windows: one fresh store copy, one daemon, one mix.

See bench/identity.py for what is measured and why; this module runs the
windows and bench/identity.py turns them into figures, checks and the report.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import identity_db, load
from bench.daemon import (
    TOKEN_NAME,
    RunningDaemon,
    commit_delta,
    commit_stats,
    read_log,
    start_daemon,
)
from bench.load import LoadResult
from bench.machine import load_average
from bench.procs import Cores, free_port

SCRIPT = Path(__file__).resolve().with_name("identity.lua")
MIXES = ("mixed", "new", "existing")
# Events a 2xx adds, by mix: a new sender's message also opens a conversation.
EVENTS_PER_MESSAGE = {"mixed": 1.5, "new": 2.0, "existing": 1.0}

if TOKEN_NAME != identity_db.TOKEN_NAME:  # the stored idempotency rows are scoped to it
    raise RuntimeError("bench.daemon.TOKEN_NAME and bench.identity_db.TOKEN_NAME differ")


@dataclass(frozen=True)
class Plan:
    rounds: int
    seconds: int
    connections: int
    warmup_seconds: int
    sizes: tuple[int, ...]
    threads: int = 1


QUICK = Plan(rounds=1, seconds=3, connections=10, warmup_seconds=1, sizes=(10**3, 10**4))
FULL = Plan(rounds=3, seconds=10, connections=50, warmup_seconds=2, sizes=(10**4, 10**5, 10**6))


@dataclass
class Window:
    """One measured window: a fresh copy of the N-contact store, one daemon, one mix."""

    n: int
    mix: str
    round: int
    load: LoadResult
    warmup: LoadResult | None
    cpu_seconds: float
    system_seconds: float  # the kernel's part of cpu_seconds (page reads, fsync, sockets)
    head_before: int
    head_after: int
    contacts_after: int
    conversations_after: int
    commits: dict[str, float]
    copy_seconds: float
    start_seconds: float
    loadavg: list[float]
    exit_code: int | None
    stopped_by: str
    log_levels: dict[str, int] = field(default_factory=dict)
    log_warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return sum(c for code, c in self.load.statuses.items() if 200 <= code < 300)

    @property
    def created(self) -> int:
        """Messages answered 201, warm-up included: each one appended events."""
        return self.load.count(201) + (self.warmup.count(201) if self.warmup else 0)

    @property
    def cost_us(self) -> float:
        return self.cpu_seconds / self.ok * 1e6 if self.ok else float("inf")

    @property
    def events_per_message(self) -> float:
        return (self.head_after - self.head_before) / self.created if self.created else 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "stored_contacts": self.n,
            "mix": self.mix,
            "round": self.round,
            "cost_us_per_message": round(self.cost_us, 1),
            "daemon_cpu_seconds": round(self.cpu_seconds, 3),
            "daemon_system_seconds": round(self.system_seconds, 3),
            "answered_2xx": self.ok,
            "daemon_cpu_share": round(self.cpu_seconds / self.load.seconds, 3)
            if self.load.seconds
            else 0.0,
            "load": self.load.as_json(),
            "warmup": self.warmup.as_json() if self.warmup else None,
            "head_offset_before": self.head_before,
            "head_offset_after": self.head_after,
            "answered_201_total": self.created,
            "events_per_message": round(self.events_per_message, 3),
            "contacts_after": self.contacts_after,
            "conversations_after": self.conversations_after,
            "commits_during_measured_run": self.commits,
            "copy_seconds": round(self.copy_seconds, 2),
            "daemon_start_seconds": round(self.start_seconds, 2),
            "loadavg_before": self.loadavg,
            "exit_code": self.exit_code,
            "stopped_by": self.stopped_by,
            "log_levels": self.log_levels,
            "log_warnings": self.log_warnings,
        }


def power(n: int) -> str:
    """10^4 for 10000; the plain number for anything else."""
    exp = len(str(n)) - 1
    return f"10^{exp}" if n == 10**exp else f"{n:,}"


def run_wrk(
    url: str,
    *,
    token: str,
    tag: str,
    mix: str,
    stored: int,
    seconds: int,
    plan: Plan,
    core: int | None,
) -> LoadResult:
    """One wrk run with bench/identity.lua, pinned to `core` (bench.load.run_wrk)."""
    return load.run_wrk(
        url,
        token=token,
        tag=tag,
        seconds=seconds,
        connections=plan.connections,
        threads=plan.threads,
        core=core,
        script=SCRIPT,
        script_args=(mix, str(stored)),
    )


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a live process, from /proc (as bench.procs.cpu_seconds)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def head_offset(daemon: RunningDaemon) -> int:
    store = daemon.readyz().get("store")
    return int(store.get("head_offset", 0)) if isinstance(store, dict) else 0


def store_counts(db: Path) -> tuple[int, int]:
    """Contacts and conversations in a stopped daemon's store (did existing senders hit?)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        contacts = int(conn.execute("SELECT count(*) FROM contacts").fetchone()[0])
        conversations = int(conn.execute("SELECT max(number) FROM conversations").fetchone()[0])
    finally:
        conn.close()
    return contacts, conversations


def run_window(
    prepared: identity_db.Prepared,
    mix: str,
    rnd: int,
    plan: Plan,
    cores: Cores,
) -> Window:
    """Copy the store, start the daemon on it, warm up, measure one window, stop, count."""
    work = Path(tempfile.mkdtemp(prefix="helpline-bench-identity-"))
    try:
        state_dir = work / "state"
        copy_seconds = identity_db.copy_to(prepared, state_dir)
        loadavg = load_average()
        started = time.monotonic()
        daemon = start_daemon(work, free_port(), cores.server, state_dir=state_dir, deadline=120.0)
        start_seconds = time.monotonic() - started
        url = f"{daemon.base_url}/v1/messages"
        tag = f"{power(prepared.n).replace('^', '')}{mix[0]}{rnd}x{secrets.token_hex(3)}"
        warm: LoadResult | None = None
        try:
            head_before = head_offset(daemon)
            if plan.warmup_seconds:
                warm = run_wrk(
                    url,
                    token=daemon.token,
                    tag=f"w{tag}",
                    mix=mix,
                    stored=prepared.n,
                    seconds=plan.warmup_seconds,
                    plan=plan,
                    core=cores.load,
                )
            before = commit_stats(daemon.metrics_text())
            user_before, sys_before = cpu_split(daemon.child.pid)
            load = run_wrk(
                url,
                token=daemon.token,
                tag=f"m{tag}",
                mix=mix,
                stored=prepared.n,
                seconds=plan.seconds,
                plan=plan,
                core=cores.load,
            )
            user_after, sys_after = cpu_split(daemon.child.pid)
            commits = commit_delta(commit_stats(daemon.metrics_text()), before)
            head_after = head_offset(daemon)
        finally:
            daemon.child.stop()
        levels, notable = read_log(daemon.child.log_path)
        contacts, conversations = store_counts(state_dir / identity_db.DB_NAME)
        return Window(
            n=prepared.n,
            mix=mix,
            round=rnd,
            load=load,
            warmup=warm,
            cpu_seconds=(user_after - user_before) + (sys_after - sys_before),
            system_seconds=sys_after - sys_before,
            head_before=head_before,
            head_after=head_after,
            contacts_after=contacts,
            conversations_after=conversations,
            commits=commits,
            copy_seconds=copy_seconds,
            start_seconds=start_seconds,
            loadavg=loadavg,
            exit_code=daemon.child.exit_code,
            stopped_by=daemon.child.stopped_by,
            log_levels=levels,
            log_warnings=notable,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
