"""The `identity` benchmark: ingest cost per message against the number of stored contacts.

For each N stored contacts (10^4, 10^5, 10^6; quick: 10^3, 10^4) a cached store
with N contacts and their history (bench/identity_db.py) is copied into a fresh
state dir, a real daemon starts on it (core 0) and wrk (core 1) posts new
messages with distinct Idempotency-Keys for one measured window, in one of
three sender mixes, each on its own fresh copy of the store:

- mixed: half from new senders, half from existing stored contacts (the figure);
- new: new senders only (identity lookups miss; contact, handle and
  conversation are created);
- existing: stored contacts only (handle lookup hits, the message joins the
  contact's stored conversation through the reopen window).

helpline has no switch to turn identity off, so "with against without the
checks" is new-only against existing-only: the same daemon, the lookups that
hit against the ones that miss. Cost per message = the daemon's CPU seconds
(utime + stime from /proc, all its threads) over the measured window ÷ the
messages answered 2xx in it. Rounds run every (N, mix) once, in an order that
rotates from round to round; the figure is the median across rounds of
cost(N) ÷ cost(smallest N).
"""

from __future__ import annotations

import os
import resource
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from bench import identity_db
from bench.api import commit_delta, commit_stats, read_log
from bench.daemon import TOKEN_NAME, RunningDaemon, config_text, helpline_executable
from bench.load import LoadResult, ensure_wrk, parse_output, to_result
from bench.machine import load_average
from bench.procs import (
    DAEMON_CORE,
    LOAD_CORE,
    BenchError,
    free_port,
    pinned,
    pinning_available,
    spawn,
    wait_ready,
)
from bench.report import Figure, Outcome

T = TypeVar("T")

TITLE = "identity — ingest cost per message against stored contacts"
SCRIPT = Path(__file__).resolve().with_name("identity.lua")
WRK_TIMEOUT = "10s"
MIXES = ("mixed", "new", "existing")
# Events a 2xx adds, by mix: a new sender's message also opens a conversation.
EVENTS_PER_MESSAGE = {"mixed": 1.5, "new": 2.0, "existing": 1.0}
FLOOR, GOAL = 1.3, 1.1

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
    """One wrk run with bench/identity.lua, pinned to `core` (as bench.load.run_wrk)."""
    cmd = pinned(
        [
            ensure_wrk(),
            "-t",
            str(plan.threads),
            "-c",
            str(plan.connections),
            "-d",
            f"{seconds}s",
            "--timeout",
            WRK_TIMEOUT,
            "-s",
            str(SCRIPT),
            url,
            "--",
            token,
            tag,
            mix,
            str(stored),
        ],
        core,
    )
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


def start_daemon_on(work: Path, state_dir: Path, core: int | None) -> RunningDaemon:
    """bench.daemon.start_daemon, but on a state dir that already holds a store."""
    port = free_port()
    token = secrets.token_urlsafe(24)
    config_path = work / "helpline.toml"
    config_path.write_text(config_text(port, token), encoding="utf-8")
    cmd = [
        str(helpline_executable()),
        "run",
        "--config",
        str(config_path),
        "--state-dir",
        str(state_dir),
        "--log-format",
        "json",
    ]
    child = spawn("helpline daemon", pinned(cmd, core), work / "daemon.log")
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(child, f"{base_url}/readyz", deadline=120.0)
    except BaseException:
        child.stop()
        raise
    return RunningDaemon(child, base_url, token, config_path, state_dir)


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
    cores: tuple[int | None, int | None],
) -> Window:
    """Copy the store, start the daemon on it, warm up, measure one window, stop, count."""
    server_core, load_core = cores
    work = Path(tempfile.mkdtemp(prefix="helpline-bench-identity-"))
    try:
        state_dir = work / "state"
        copy_seconds = identity_db.copy_to(prepared, state_dir)
        loadavg = load_average()
        started = time.monotonic()
        daemon = start_daemon_on(work, state_dir, server_core)
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
                    core=load_core,
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
                core=load_core,
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


def rotated(items: Sequence[T], by: int) -> list[T]:
    k = by % len(items) if items else 0
    return [*items[k:], *items[:k]]


def _med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _pick(windows: Sequence[Window], n: int, mix: str) -> list[Window]:
    return sorted((w for w in windows if w.n == n and w.mix == mix), key=lambda w: w.round)


def figures(windows: Sequence[Window], plan: Plan) -> list[Figure]:
    """Cost(N) ÷ cost(smallest N) per round for each mix, and existing ÷ new per N."""
    base = plan.sizes[0]
    out: list[Figure] = []
    for mix in MIXES:
        first = _pick(windows, base, mix)
        for n in plan.sizes[1:]:
            these = _pick(windows, n, mix)
            ratios = [a.cost_us / b.cost_us for a, b in zip(these, first, strict=True)]
            judged = mix == "mixed"
            out.append(
                Figure(
                    f"{mix}: cost per message at {power(n)} ÷ at {power(base)}",
                    ratios,
                    FLOOR if judged else None,
                    GOAL if judged else None,
                    False,
                    f"{power(base)} {_med([w.cost_us for w in first]):,.0f} µs; "
                    f"{power(n)} {_med([w.cost_us for w in these]):,.0f} µs",
                )
            )
    for n in plan.sizes:
        old = _pick(windows, n, "existing")
        new = _pick(windows, n, "new")
        out.append(
            Figure(
                f"at {power(n)}: existing-sender cost ÷ new-sender cost",
                [a.cost_us / b.cost_us for a, b in zip(old, new, strict=True)],
                None,
                None,
                False,
                f"existing {_med([w.cost_us for w in old]):,.0f} µs; "
                f"new {_med([w.cost_us for w in new]):,.0f} µs",
            )
        )
    return out


def per_size_table(windows: Sequence[Window], plan: Plan) -> str:
    """Absolute values per N and mix (medians over rounds): cost, throughput, latency."""
    lines = [
        "| stored contacts | senders | cost µs/msg (median, min–max) | req/s | p50 ms | p99 ms "  # noqa: RUF001
        "| kernel share of cost | ms/commit | events/msg | daemon CPU share |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in plan.sizes:
        for mix in MIXES:
            ws = _pick(windows, n, mix)
            costs = [w.cost_us for w in ws]
            lines.append(
                f"| {power(n)} | {mix} | {_med(costs):,.0f} ({min(costs):,.0f}–{max(costs):,.0f}) "  # noqa: RUF001
                f"| {_med([w.load.rps for w in ws]):,.0f} "
                f"| {_med([w.load.latency_ms['p50'] for w in ws]):.2f} "
                f"| {_med([w.load.latency_ms['p99'] for w in ws]):.2f} "
                f"| {_med([w.system_seconds / w.cpu_seconds for w in ws if w.cpu_seconds]):.2f} "
                f"| {_med([w.commits.get('mean_commit_ms', 0.0) for w in ws]):.1f} "
                f"| {_med([w.events_per_message for w in ws]):.2f} "
                f"| {_med([w.cpu_seconds / w.load.seconds for w in ws]):.2f} |"
            )
    return "\n".join(lines)


def _codes(loads: Sequence[LoadResult]) -> dict[int, int]:
    codes: dict[int, int] = {}
    for run in loads:
        for code, n in run.statuses.items():
            if not 200 <= code < 300:
                codes[code] = codes.get(code, 0) + n
    return codes


def checks(windows: Sequence[Window]) -> tuple[list[str], list[str], list[str]]:
    """Correctness of the run itself: (check lines, problems that void it, warnings)."""
    problems: list[str] = []
    warnings: list[str] = []
    loads = [w.load for w in windows] + [w.warmup for w in windows if w.warmup]
    codes = _codes(loads)
    non2xx = sum(codes.values())
    sock = sum(x.socket_errors for x in loads)
    dup = sum(x.count(200) for x in loads)
    if non2xx:
        problems.append(f"the daemon answered {non2xx} non-2xx responses: {codes}")
    if sock:
        problems.append(f"{sock} socket errors or timeouts in wrk")
    if dup:
        warnings.append(f"{dup} answers were 200 (duplicate) although every key was distinct")
    lines = [
        f"non-2xx answers (warm-up included): {non2xx} (503: {codes.get(503, 0)}); "
        f"wrk socket errors/timeouts: {sock}; 200-duplicates: {dup}"
    ]
    short, hits, fresh = [], [], []
    for w in windows:
        name = f"{power(w.n)}/{w.mix}/round {w.round}"
        added = w.head_after - w.head_before
        if added < w.created:
            problems.append(f"{name}: the stream grew by {added} events < {w.created} answered 201")
        expected = EVENTS_PER_MESSAGE[w.mix]
        if w.created and abs(w.events_per_message - expected) > 0.02 * expected:
            short.append(f"{name}: {w.events_per_message:.3f}")
        new_contacts = w.contacts_after - w.n
        new_conversations = w.conversations_after - w.n
        if w.mix == "existing":
            hits.append(f"{new_contacts}/{new_conversations}")
            if new_contacts or new_conversations:
                problems.append(
                    f"{name}: existing senders created {new_contacts} contacts and "
                    f"{new_conversations} conversations (their lookups should all hit)"
                )
        else:
            share = new_contacts / w.created if w.created else 0.0
            fresh.append(f"{share:.3f}")
            want = 1.0 if w.mix == "new" else 0.5
            if abs(share - want) > 0.02:
                warnings.append(
                    f"{name}: new contacts per message answered 201 was {share:.3f}, not {want}"
                )
        if w.exit_code != 0 or w.stopped_by != "SIGTERM":
            warnings.append(
                f"{name}: the daemon ended with status {w.exit_code} ({w.stopped_by}) after SIGTERM"
            )
        warnings.extend(f"{name}: daemon log: {line}" for line in w.log_warnings)
    lines.append(
        "durability: in every window the stream grew by at least one event per message "
        "answered 201 (warm-up included)"
    )
    lines.append(
        "existing senders hit: new contacts/new conversations in each existing-only window "
        f"(must be 0/0): {', '.join(hits)}"
    )
    lines.append(
        "new senders created contacts: new contacts per message answered 201 in the new-only "
        f"(1.0) and mixed (0.5) windows: {', '.join(fresh)}"
    )
    if short:
        warnings.append(
            "events per message answered 201 differed from the expected 1.0 (existing), "
            "2.0 (new), 1.5 (mixed): " + "; ".join(short)
        )
    shares = [w.cpu_seconds / w.load.seconds for w in windows if w.load.seconds]
    lines.append(
        f"daemon CPU share of its core in the measured windows: {min(shares):.2f}–{max(shares):.2f}"  # noqa: RUF001
    )
    lines.append(
        "group commit in the measured windows (median): "
        f"{_med([w.commits.get('mean_batch', 0.0) for w in windows]):g} writes/commit, "
        f"{_med([w.commits.get('mean_commit_ms', 0.0) for w in windows]):g} ms/commit"
    )
    return lines, problems, warnings


def run(
    *,
    quick: bool,
    pairs: int | None = None,
    seconds: int | None = None,
    connections: int | None = None,
    progress: Callable[[str], None] = print,
) -> Outcome:
    """Build or reuse the stores, then rounds of every (N, mix) window in rotating order."""
    plan = QUICK if quick else FULL
    plan = replace(
        plan,
        rounds=pairs or plan.rounds,
        seconds=seconds or plan.seconds,
        connections=connections or plan.connections,
    )
    cores: tuple[int | None, int | None] = (
        (DAEMON_CORE, LOAD_CORE) if pinning_available() else (None, None)
    )
    prepared = {n: identity_db.prepare(n, progress) for n in plan.sizes}
    for p in prepared.values():
        how = "reused" if p.reused else f"built in {p.build_seconds:.1f} s"
        progress(f"store with {p.n:,} contacts: {p.size_bytes / 2**20:,.0f} MiB, {how}")
    windows: list[Window] = []
    order = [(n, mix) for n in plan.sizes for mix in MIXES]
    for rnd in range(1, plan.rounds + 1):
        for n, mix in rotated(order, (rnd - 1) * len(MIXES) + (rnd - 1)):
            w = run_window(prepared[n], mix, rnd, plan, cores)
            windows.append(w)
            progress(
                f"round {rnd}/{plan.rounds} {power(n):>5} {mix:<8} {w.cost_us:7,.0f} µs/msg, "
                f"{w.load.rps:7,.0f} req/s, p99 {w.load.latency_ms['p99']:6.2f} ms, "
                f"non-2xx {w.load.non_2xx}, copy {w.copy_seconds:.1f} s"
            )
    lines, problems, warnings = checks(windows)
    if cores[0] is None:
        warnings.append("cores 0 and 1 were not both available: nothing was pinned")
    figs = figures(windows, plan)
    table = per_size_table(windows, plan)
    sizes = ", ".join(power(n) for n in plan.sizes)
    settings = (
        f"{plan.rounds} round{'s' if plan.rounds != 1 else ''}; in each, every stored-contact "
        f"count ({sizes}) and sender mix (mixed half new/half existing, new only, existing "
        f"only) once, in an order rotating between rounds, each window on a fresh copy of "
        f"the pre-populated store with a fresh daemon: {plan.warmup_seconds} s warm-up, "
        f"{plan.seconds} s measured, {plan.connections} keep-alive connections, wrk with "
        f"{plan.threads} thread; daemon on core {cores[0]}, wrk on core {cores[1]}; store on "
        "its default durability; distinct Idempotency-Key in every request. Cost per "
        "message = daemon CPU seconds (utime+stime, all threads) in the measured window ÷ "
        "messages answered 2xx in it; a figure is the median across rounds of the per-round "
        "ratio."
    )
    data: dict[str, object] = {
        "plan": asdict(plan),
        "cores": {"server": cores[0], "load": cores[1]},
        "stores": [p.as_json() for p in prepared.values()],
        "windows": [w.as_json() for w in windows],
        "figures": [f.as_json() for f in figs],
        "per_size_table": table,
        "checks": lines,
        "problems": problems,
        "warnings": warnings,
    }
    return Outcome(TITLE, settings, figs, lines, problems, warnings, data, extra=table)
