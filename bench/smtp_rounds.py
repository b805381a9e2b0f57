"""The `smtp` benchmark's measured runs: one freshly started server per run, and the latency phase.

See bench/smtp.py for what is measured and why; this module starts helpline,
Postfix or aiosmtpd, drives each with smtp-source, checks what it stored, and
runs the latency phase on a fresh daemon; bench/smtp.py turns the runs into
figures, checks and the report.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.daemon import (
    RunningDaemon,
    commit_delta,
    commit_stats,
    ending_warnings,
    read_log,
    start_daemon,
)
from bench.procs import BenchError, Cores, cpu_seconds, free_port
from bench.smtp_latency import run_latency
from bench.smtp_load import SourceRun, run_smtp_source, wait_banner
from bench.smtp_null import start_null
from bench.smtp_postfix import DOMAIN, HoldPostfix


@dataclass(frozen=True)
class Plan:
    rounds: int
    seconds: int  # the target length of a measured run
    sessions: int
    warmup_messages: int
    latency_seconds: int
    latency_warmup: float
    drain_seconds: float = 120.0  # how long helpline's normalization backlog may take


QUICK = Plan(
    rounds=1, seconds=3, sessions=20, warmup_messages=200, latency_seconds=3, latency_warmup=0.5
)
FULL = Plan(
    rounds=5, seconds=10, sessions=20, warmup_messages=1000, latency_seconds=10, latency_warmup=1.0
)


def smtp_section(port: int) -> str:
    """helpline's connector: plain SMTP on loopback, mail for the bench domain only."""
    return (
        "[connectors.mail]\n"
        'type = "smtp"\n'
        f'listen = "127.0.0.1:{port}"\n'
        f'recipients = ["@{DOMAIN}"]\n'
        'hostname = "helpline.bench.test"\n'
        "max_connections = 1000\n"
        # smtp-source reconnects for every message: a closing session can overlap its successor.
        "max_connections_per_client = 100\n"
    )


def _tempdir(kind: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"helpline-bench-smtp-{kind}-"))


@dataclass
class ServerRun:
    server: str
    round: int
    warmup: SourceRun
    load: SourceRun
    server_cpu_share: float | None = None  # the server process's own CPU (helpline only)
    details: dict[str, object] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return self.warmup.messages + self.load.messages

    def as_json(self) -> dict[str, object]:
        return {
            "server": self.server,
            "round": self.round,
            "warmup": self.warmup.as_json(),
            "load": self.load.as_json(),
            "server_process_cpu_share": None
            if self.server_cpu_share is None
            else round(self.server_cpu_share, 3),
            "details": self.details,
            "problems": self.problems,
            "warnings": self.warnings,
        }


# -- helpline's store, read from outside (sqlite3, read-only, WAL readers do not block) --


def _db(state_dir: Path) -> sqlite3.Connection:
    path = state_dir / "helpline.db"
    try:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as err:
        raise BenchError(f"cannot open helpline's store {path}: {err}") from err


def raw_mail_states(state_dir: Path) -> dict[str, int]:
    db = _db(state_dir)
    try:
        rows = db.execute("SELECT state, count(*) FROM raw_mail GROUP BY state").fetchall()
    except sqlite3.Error as err:
        raise BenchError(f"cannot read raw_mail in {state_dir}: {err}") from err
    finally:
        db.close()
    return {str(state): int(n) for state, n in rows}


def store_summary(state_dir: Path) -> dict[str, object]:
    """raw_mail rows, distinct dedup keys and states; events by type (after the daemon stopped)."""
    db = _db(state_dir)
    try:
        rows, keys = db.execute(
            "SELECT count(*), count(DISTINCT dedup_key) FROM raw_mail"
        ).fetchone()
        synthetic = db.execute(
            "SELECT count(*) FROM raw_mail WHERE dedup_key LIKE 'synthetic:%'"
        ).fetchone()[0]
        states = dict(db.execute("SELECT state, count(*) FROM raw_mail GROUP BY state").fetchall())
        events = dict(db.execute("SELECT type, count(*) FROM events GROUP BY type").fetchall())
    except sqlite3.Error as err:
        raise BenchError(f"cannot read helpline's store in {state_dir}: {err}") from err
    finally:
        db.close()
    return {
        "raw_mail_rows": int(rows),
        "distinct_dedup_keys": int(keys),
        "synthetic_keys": int(synthetic),
        "raw_mail_states": {str(k): int(v) for k, v in states.items()},
        "events_by_type": {str(k): int(v) for k, v in events.items()},
    }


def wait_drained(state_dir: Path, timeout: float) -> tuple[float, int]:
    """Until no raw mail is pending (normalized or failed): (seconds waited, still pending)."""
    started = time.monotonic()
    pending = raw_mail_states(state_dir).get("pending", 0)
    while pending and time.monotonic() - started < timeout:
        time.sleep(0.1)
        pending = raw_mail_states(state_dir).get("pending", 0)
    return time.monotonic() - started, pending


def _start_helpline(work: Path, cores: Cores) -> tuple[RunningDaemon, int]:
    smtp_port = free_port()
    daemon = start_daemon(work, free_port(), cores.server, extra_config=smtp_section(smtp_port))
    try:
        wait_banner(smtp_port, 20.0, "helpline smtp connector", daemon.child.alive)
    except BaseException:
        daemon.child.stop()
        raise
    return daemon, smtp_port


def _source(port: int, messages: int, plan: Plan, cores: Cores) -> SourceRun:
    return run_smtp_source(
        port,
        messages,
        sessions=plan.sessions,
        load_core=cores.load,
        server_core=cores.server,
        timeout=max(120.0, plan.seconds * 20.0),
    )


def _counter_problems(run: ServerRun) -> None:
    for what, src in (("warm-up", run.warmup), ("measured run", run.load)):
        if src.completed != src.messages:
            run.problems.append(
                f"{run.server} round {run.round} {what}: smtp-source counted {src.completed} "
                f"completed DATA commands of {src.messages}"
            )


def run_helpline(rnd: int, messages: int | None, plan: Plan, cores: Cores) -> ServerRun:
    """Fresh state dir and daemon; warm-up, drain, measured run, backlog, drain, stop, count."""
    work = _tempdir("helpline")
    try:
        daemon, port = _start_helpline(work, cores)
        try:
            warm = _source(port, plan.warmup_messages, plan, cores)
            warm_drain, _ = wait_drained(daemon.state_dir, plan.drain_seconds)
            n = messages or sized(warm, plan)
            done_before = raw_mail_states(daemon.state_dir).get("done", 0)
            before = commit_stats(daemon.metrics_text())
            cpu_before = cpu_seconds(daemon.child.pid)
            load = _source(port, n, plan, cores)
            cpu = (cpu_seconds(daemon.child.pid) - cpu_before) / load.seconds
            # Read before anything else: how far normalization got while mail was accepted.
            states = raw_mail_states(daemon.state_dir)
            commits = commit_delta(commit_stats(daemon.metrics_text()), before)
            backlog = states.get("pending", 0)
            drain, left = wait_drained(daemon.state_dir, plan.drain_seconds)
            ready = daemon.readyz()
        finally:
            daemon.child.stop()
        levels, notable = read_log(daemon.child.log_path)
        store = store_summary(daemon.state_dir)
        run = ServerRun(
            "helpline",
            rnd,
            warm,
            load,
            cpu,
            {
                "store_after": store,
                "warmup_drain_seconds": round(warm_drain, 2),
                "pending_at_end_of_measured_run": backlog,
                # Normalized into the stream (raw mail done: its event is committed) by the
                # time smtp-source finished, of the run's messages; and so per second of it.
                "normalized_by_end_of_measured_run": states.get("done", 0) - done_before,
                "normalized_per_second_during_measured_run": round(
                    (states.get("done", 0) - done_before) / load.seconds, 1
                )
                if load.seconds
                else 0.0,
                "drain_seconds_after_measured_run": round(drain, 2),
                "pending_after_drain": left,
                "commits_during_measured_run": commits,
                "readyz_after": ready,
                "exit_code": daemon.child.exit_code,
                "stopped_by": daemon.child.stopped_by,
                "log_levels": levels,
                "log_warnings": notable,
            },
        )
        _counter_problems(run)
        rows = int(str(store["raw_mail_rows"]))
        if rows != run.sent:
            run.problems.append(
                f"helpline round {rnd}: raw_mail holds {rows} rows, {run.sent} messages were "
                "answered 250"
            )
        if left:
            run.warnings.append(
                f"helpline round {rnd}: {left} raw mails still pending {plan.drain_seconds:.0f} s "
                "after the run"
            )
        run.warnings.extend(
            ending_warnings(
                f"helpline round {rnd}", daemon.child.exit_code, daemon.child.stopped_by, notable
            )
        )
        return run
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_postfix(rnd: int, messages: int | None, plan: Plan, cores: Cores) -> ServerRun:
    """A fresh private Postfix; warm-up, measured run, then its queues and its log."""
    postfix = HoldPostfix(free_port())
    try:
        postfix.start(cores.server)
        warm = _source(postfix.port, plan.warmup_messages, plan, cores)
        n = messages or sized(warm, plan)
        load = _source(postfix.port, n, plan, cores)
        queues = postfix.queues()
        deliveries = postfix.delivered()
    finally:
        postfix.stop()
    run = ServerRun(
        "postfix", rnd, warm, load, None, {"queues_after": queues, "delivery_attempts": deliveries}
    )
    _counter_problems(run)
    held = queues.get("hold", 0)
    others = {k: v for k, v in queues.items() if k != "hold"}
    if held != run.sent or others:
        run.problems.append(
            f"postfix round {rnd}: queues after the run {queues}, expected hold = {run.sent} only"
        )
    if deliveries:
        run.problems.append(f"postfix round {rnd}: {deliveries} delivery attempts in its log")
    return run


def run_aiosmtpd(rnd: int, messages: int | None, plan: Plan, cores: Cores) -> ServerRun:
    """A fresh nothing-server; warm-up, measured run, stop, its own count of messages."""
    work = _tempdir("aiosmtpd")
    try:
        port = free_port()
        child = start_null(work, port, cores.server)
        try:
            warm = _source(port, plan.warmup_messages, plan, cores)
            n = messages or sized(warm, plan)
            cpu_before = cpu_seconds(child.pid)
            load = _source(port, n, plan, cores)
            cpu = (cpu_seconds(child.pid) - cpu_before) / load.seconds
        finally:
            child.stop()
        tail = child.log_tail(5)
        accepted = next(
            (int(line.split()[1]) for line in tail.splitlines() if line.startswith("accepted ")),
            -1,
        )
        run = ServerRun(
            "aiosmtpd",
            rnd,
            warm,
            load,
            cpu,
            {"accepted": accepted, "exit_code": child.exit_code, "stopped_by": child.stopped_by},
        )
        _counter_problems(run)
        if accepted != run.sent:
            run.problems.append(
                f"aiosmtpd round {rnd}: it counted {accepted} messages, {run.sent} were sent"
            )
        return run
    finally:
        shutil.rmtree(work, ignore_errors=True)


RUNNERS: dict[str, Callable[[int, int | None, Plan, Cores], ServerRun]] = {
    "helpline": run_helpline,
    "postfix": run_postfix,
    "aiosmtpd": run_aiosmtpd,
}


def sized(warm: SourceRun, plan: Plan) -> int:
    """Messages for a run of about `plan.seconds` at the warm-up's rate (in hundreds)."""
    return max(plan.warmup_messages, round(warm.rate * plan.seconds / 100) * 100)


def run_latency_phase(rate: float, plan: Plan, cores: Cores) -> dict[str, object]:
    """A fresh daemon; the latency client at `rate`; every answer must be 250 and stored."""
    work = _tempdir("latency")
    try:
        daemon, port = _start_helpline(work, cores)
        try:
            cpu_before, wall_before = cpu_seconds(daemon.child.pid), time.monotonic()
            result = run_latency(
                port,
                rate=rate,
                seconds=plan.latency_seconds,
                sessions=plan.sessions,
                warmup=plan.latency_warmup,
                tag=f"lat{int(time.time())}",
                core=cores.load,
            )
            result["daemon_cpu_share"] = round(
                (cpu_seconds(daemon.child.pid) - cpu_before) / (time.monotonic() - wall_before), 3
            )
            drain, _ = wait_drained(daemon.state_dir, plan.drain_seconds)
        finally:
            daemon.child.stop()
        levels, notable = read_log(daemon.child.log_path)
        result["store_after"] = store_summary(daemon.state_dir)
        result["drain_seconds"] = round(drain, 2)
        result["log_levels"] = levels
        result["log_warnings"] = notable
        result["exit_code"] = daemon.child.exit_code
        result["stopped_by"] = daemon.child.stopped_by
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)
