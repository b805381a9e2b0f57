"""The `imap` benchmark's measured runs: helpline's imap connector, or the bare IDLE watcher.

See bench/imap.py for what is measured and why. Every run gets a fresh folder
of the one private Dovecot (bench/imap_dovecot.py), so message n of the
folder is the n-th APPEND of the run. A helpline run starts a fresh daemon
(fresh state dir, default durability) with one `imap` connector on the folder
and the appender following its stream; a watcher run starts the bare
IMAPClient watcher in the daemon's place and the same appender without a stream.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from bench.daemon import (
    RunningDaemon,
    commit_delta,
    commit_stats,
    ending_warnings,
    read_log,
    slow_commits,
    start_daemon,
)
from bench.dovecot_conf import HOST
from bench.imap_client import PASSWORD_ENV, READY, TOKEN_ENV
from bench.imap_dovecot import BenchDovecot
from bench.procs import (
    BenchError,
    Child,
    Cores,
    child_env,
    cpu_seconds,
    free_port,
    pinned,
    spawn,
    wait_exit,
    wait_line,
)
from bench.smtp_latency import percentile

CONNECTOR = "mailbox"
SIDES = ("helpline", "watcher")


@dataclass(frozen=True)
class Plan:
    pairs: int
    seconds: int  # measured APPENDs per run = seconds ÷ interval
    warmup: int  # APPENDs before the measured ones, not counted
    interval: float = 0.2
    drain: float = 15.0  # how long after the last APPEND a message may still arrive

    @property
    def messages(self) -> int:
        return max(1, round(self.seconds / self.interval))


QUICK = Plan(pairs=2, seconds=2, warmup=2)
FULL = Plan(pairs=5, seconds=8, warmup=3)


def latency_summary(values: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max/min in ms (nearest rank, as the smtp latency phase)."""
    vals = list(values)
    if not vals:
        return {}
    return {
        "p50": round(percentile(vals, 0.50), 2),
        "p90": round(percentile(vals, 0.90), 2),
        "p99": round(percentile(vals, 0.99), 2),
        "max": round(max(vals), 2),
        "min": round(min(vals), 2),
    }


@dataclass
class SideRun:
    """One measured run of one side: APPEND → seen latencies of its measured messages."""

    side: str
    pair: int
    position: int  # 1: ran first in its pair, 2: second
    folder: str
    appended: int  # warm-up + measured APPENDs that completed
    latencies_ms: list[float] = field(default_factory=list)
    append_ms: list[float] = field(default_factory=list)  # APPEND round trips, measured ones
    late: int = 0  # measured APPENDs started more than LATE_MS after their slot
    missing: list[str] = field(default_factory=list)  # never seen
    duplicates: list[str] = field(default_factory=list)  # seen more than once (stream)
    details: dict[str, object] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, float]:
        return latency_summary(self.latencies_ms)

    @property
    def p50(self) -> float:
        return self.summary.get("p50", float("nan"))

    @property
    def p99(self) -> float:
        return self.summary.get("p99", float("nan"))

    def as_json(self) -> dict[str, object]:
        return {
            "side": self.side,
            "pair": self.pair,
            "position": self.position,
            "folder": self.folder,
            "appended": self.appended,
            "latency_ms": self.summary,
            "latencies_ms": [round(x, 3) for x in self.latencies_ms],
            "append_ms": latency_summary(self.append_ms),
            "late_appends": self.late,
            "missing": self.missing,
            "duplicates": self.duplicates,
            "details": self.details,
            "problems": self.problems,
            "warnings": self.warnings,
        }


def imap_section(dovecot: BenchDovecot, folder: str) -> str:
    """helpline's connector: the folder over plain IMAP on loopback, IDLE on."""
    return (
        f"[connectors.{CONNECTOR}]\n"
        'type = "imap"\n'
        f'host = "{HOST}"\n'
        f"port = {dovecot.port}\n"
        'security = "none"\n'
        f'user = "{dovecot.user}"\n'
        f'password = "{dovecot.password}"\n'
        f'folder = "{folder}"\n'
        "idle = true\n"
    )


def _env(dovecot: BenchDovecot, token: str = "") -> dict[str, str]:
    env = child_env()
    env[PASSWORD_ENV] = dovecot.password
    if token:
        env[TOKEN_ENV] = token
    return env


def _client(mode: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "bench.imap_client", mode, *args]


def _connector(daemon: RunningDaemon) -> dict[str, object]:
    components = daemon.readyz().get("components")
    found = components.get(f"connectors.{CONNECTOR}") if isinstance(components, dict) else None
    return found if isinstance(found, dict) else {}


def _wait_running(daemon: RunningDaemon, timeout: float = 30.0) -> None:
    until = time.monotonic() + timeout
    state: dict[str, object] = {}
    while time.monotonic() < until:
        state = _connector(daemon)
        if state.get("state") == "running":
            return
        time.sleep(0.05)
    raise BenchError(f"the imap connector did not reach `running` in time: {state}")


def _appender(
    work: Path,
    dovecot: BenchDovecot,
    plan: Plan,
    *,
    folder: str,
    tag: str,
    core: int | None,
    stream: str = "",
    token: str = "",
) -> tuple[Child, Path]:
    out = work / "append.json"
    args = [
        "--port",
        str(dovecot.port),
        "--folder",
        folder,
        "--count",
        str(plan.messages),
        "--warmup",
        str(plan.warmup),
        "--interval",
        str(plan.interval),
        "--tag",
        tag,
        "--drain",
        str(plan.drain),
        "--out",
        str(out),
    ]
    if stream:
        args += ["--stream", stream]
    child = spawn(
        "the appender",
        pinned(_client("append", *args), core),
        work / "append.log",
        env=_env(dovecot, token),
    )
    return child, out


def _run_timeout(plan: Plan) -> float:
    return 60.0 + plan.warmup * 10 + plan.messages * plan.interval + plan.drain


def _appends(data: dict[str, object], run: SideRun) -> list[dict[str, object]]:
    rows = data.get("appends")
    appends = [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
    run.appended = len(appends)
    uids = [r.get("uid") for r in appends]
    if uids != list(range(1, len(appends) + 1)):
        run.problems.append(f"{run.side} pair {run.pair}: APPENDUIDs {uids} are not 1..n")
    measured = [r for r in appends if not r.get("warmup")]
    run.late = sum(1 for r in measured if r.get("late"))
    run.append_ms = [(_f(r["done"]) - _f(r["start"])) * 1000 for r in measured]
    missing_warmup = data.get("missing_warmup")
    if missing_warmup:
        run.problems.append(
            f"{run.side} pair {run.pair}: warm-up message never arrived: {missing_warmup}"
        )
    return appends


def _f(value: object) -> float:
    return float(value) if isinstance(value, (int, float, str)) else float("nan")


def run_helpline(
    pair: int, position: int, plan: Plan, dovecot: BenchDovecot, cores: Cores
) -> SideRun:
    """A fresh daemon on a fresh folder; the appender follows its stream."""
    folder = f"bench/helpline-{pair}"
    dovecot.create_folder(folder)
    run = SideRun("helpline", pair, position, folder, 0)
    work = Path(tempfile.mkdtemp(prefix="helpline-bench-imap-"))
    try:
        daemon = start_daemon(
            work, free_port(), cores.server, extra_config=imap_section(dovecot, folder)
        )
        appender: Child | None = None
        try:
            _wait_running(daemon)
            metrics_before = daemon.metrics_text()
            commits_before = commit_stats(metrics_before)
            cpu_before, wall_before = cpu_seconds(daemon.child.pid), time.monotonic()
            appender, out = _appender(
                work,
                dovecot,
                plan,
                folder=folder,
                tag=f"h{pair}-{int(time.time())}",
                core=cores.load,
                stream=f"{daemon.base_url}/v1/stream",
                token=daemon.token,
            )
            wait_exit(appender, _run_timeout(plan))
            run.details["daemon_cpu_share"] = round(
                (cpu_seconds(daemon.child.pid) - cpu_before) / (time.monotonic() - wall_before), 4
            )
            metrics_after = daemon.metrics_text()
            run.details["commits"] = commit_delta(commit_stats(metrics_after), commits_before)
            run.details["commits_over_100ms"] = slow_commits(metrics_after) - slow_commits(
                metrics_before
            )
            run.details["connector_after"] = _connector(daemon)
            run.details["readyz_store_after"] = daemon.readyz().get("store")
            data = orjson.loads(out.read_bytes())
        finally:
            if appender is not None:
                appender.stop(5)
            daemon.child.stop()
        levels, notable = read_log(daemon.child.log_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    run.details["log_levels"] = levels
    run.details["exit_code"] = daemon.child.exit_code
    run.details["stopped_by"] = daemon.child.stopped_by
    run.warnings.extend(
        ending_warnings(
            f"helpline pair {pair}", daemon.child.exit_code, daemon.child.stopped_by, notable
        )
    )
    _helpline_latencies(data, run, plan.drain)
    return run


def _helpline_latencies(data: dict[str, object], run: SideRun, drain: float) -> None:
    appends = _appends(data, run)
    stream = data.get("stream")
    stream = stream if isinstance(stream, dict) else {}
    if data.get("stream_error"):
        run.problems.append(f"helpline pair {run.pair}: stream: {data['stream_error']}")
    for row in appends:
        mid = str(row["message_id"])
        times = stream.get(mid)
        if isinstance(times, list) and len(times) > 1:
            run.duplicates.append(mid)
        if row.get("warmup"):
            continue
        if not isinstance(times, list) or not times:
            run.missing.append(mid)
            continue
        run.latencies_ms.append((_f(times[0]) - _f(row["done"])) * 1000)
    run.details["stream_events"] = data.get("stream_events")
    counters = run.details.get("connector_after")
    counters = counters.get("counters") if isinstance(counters, dict) else None
    fetched = counters.get("fetched") if isinstance(counters, dict) else None
    reconnects = counters.get("reconnects") if isinstance(counters, dict) else None
    if run.missing:
        run.problems.append(
            f"helpline pair {run.pair}: {len(run.missing)} message(s) never reached the stream "
            f"within {drain:g} s of the last APPEND: {run.missing[:5]}"
        )
    if run.duplicates:
        run.problems.append(
            f"helpline pair {run.pair}: in the stream more than once: {run.duplicates[:5]}"
        )
    if fetched != run.appended:
        run.problems.append(
            f"helpline pair {run.pair}: the connector fetched {fetched}, {run.appended} appended"
        )
    if reconnects:
        run.warnings.append(
            f"helpline pair {run.pair}: the connector reconnected {reconnects} times"
        )


def run_watcher(
    pair: int, position: int, plan: Plan, dovecot: BenchDovecot, cores: Cores
) -> SideRun:
    """The bare IDLE watcher on a fresh folder (server core); the appender without a stream."""
    folder = f"bench/watcher-{pair}"
    dovecot.create_folder(folder)
    run = SideRun("watcher", pair, position, folder, 0)
    work = Path(tempfile.mkdtemp(prefix="helpline-bench-imap-"))
    total = plan.warmup + plan.messages
    try:
        watch_out = work / "watch.json"
        watcher = spawn(
            "the IDLE watcher",
            pinned(
                _client(
                    "watch",
                    "--port",
                    str(dovecot.port),
                    "--folder",
                    folder,
                    "--expect",
                    str(total),
                    "--deadline",
                    str(_run_timeout(plan)),
                    "--out",
                    str(watch_out),
                ),
                cores.server,
            ),
            work / "watch.log",
            env=_env(dovecot),
        )
        appender: Child | None = None
        try:
            wait_line(watcher, READY, 30.0)
            appender, out = _appender(
                work,
                dovecot,
                plan,
                folder=folder,
                tag=f"w{pair}-{int(time.time())}",
                core=cores.load,
            )
            wait_exit(appender, _run_timeout(plan))
            wait_exit(watcher, plan.drain + 10)
        finally:
            if appender is not None:
                appender.stop(5)
            watcher.stop(5)
        data = orjson.loads(out.read_bytes())
        watched = orjson.loads(watch_out.read_bytes())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    appends = _appends(data, run)
    exists = watched.get("exists") if isinstance(watched, dict) else None
    exists = exists if isinstance(exists, dict) else {}
    for n, row in enumerate(appends, start=1):
        when = exists.get(str(n))
        if row.get("warmup"):
            continue
        if when is None:
            run.missing.append(str(row["message_id"]))
            continue
        run.latencies_ms.append((_f(when) - _f(row["done"])) * 1000)
    run.details["watcher_responses"] = watched.get("responses")
    if run.missing:
        run.problems.append(
            f"watcher pair {pair}: no EXISTS for {len(run.missing)} message(s): {run.missing[:5]}"
        )
    return run


RUNNERS = {"helpline": run_helpline, "watcher": run_watcher}


def run_pairs(
    plan: Plan, cores: Cores, progress: Callable[[str], None]
) -> tuple[list[SideRun], dict[str, object]]:
    """One Dovecot for the whole benchmark; pairs in alternating order (helpline first in
    odd pairs, the watcher first in even ones)."""
    dovecot = BenchDovecot()
    runs: list[SideRun] = []
    info: dict[str, object] = {}
    try:
        dovecot.start(cores.load)
        info["dovecot_port"] = dovecot.port
        for pair in range(1, plan.pairs + 1):
            order = SIDES if pair % 2 else SIDES[::-1]
            for position, side in enumerate(order, start=1):
                done = RUNNERS[side](pair, position, plan, dovecot, cores)
                runs.append(done)
                s = done.summary
                progress(
                    f"pair {pair}/{plan.pairs} {side:8}: p50 {s.get('p50')} ms, "
                    f"p99 {s.get('p99')} ms, max {s.get('max')} ms "
                    f"({len(done.latencies_ms)}/{plan.messages} seen"
                    + (f", {len(done.problems)} problem(s)" if done.problems else "")
                    + ")"
                )
    finally:
        info["dovecot_log_problems"] = dovecot.log_problems()
        dovecot.stop()
    return runs, info
