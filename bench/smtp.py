"""The `smtp` benchmark: SMTP accept rate against Postfix's queue and a do-nothing aiosmtpd.

Three servers, each on the server core, measured in interleaved rounds
(helpline, Postfix, aiosmtpd; helpline, Postfix, aiosmtpd; ...), each run on a
freshly started server:

- helpline: the real daemon (`helpline run`, default durability) with an `smtp`
  connector for @bench.example; it answers 250 only after the raw message is
  committed, then normalizes and ingests it on the same loop;
- Postfix: a private instance (bench/smtp_postfix.py) whose smtpd puts every
  message on the hold queue: written to the durable queue, never delivered;
- aiosmtpd: the same library helpline's connector builds on, with a DATA hook
  that answers 250 and does nothing (bench/smtp_null.py): the protocol ceiling.

The load is Postfix's own smtp-source (bench/smtp_load.py) on the load core:
20 parallel sessions, 5 KB messages, one message per connection, a fixed count
per server sized from its first warm-up so a run lasts about `seconds`; the
rate is that count ÷ the wall clock around smtp-source. Every run starts with
a warm-up of its own (helpline's normalization backlog from the warm-up is
left to drain before the measured run). The figures are medians over rounds
of the per-round ratios. A separate phase on a fresh daemon measures DATA end
→ 250 with bench/smtp_latency.py at half the measured helpline rate.
"""

from __future__ import annotations

import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.daemon import (
    RunningDaemon,
    commit_delta,
    commit_stats,
    commit_summary,
    ending_warnings,
    read_log,
    start_daemon,
)
from bench.procs import BenchError, Cores, cpu_seconds, free_port
from bench.report import Figure, Outcome, overridden
from bench.smtp_latency import run_latency
from bench.smtp_load import MESSAGE_BYTES, SourceRun, run_smtp_source, wait_banner
from bench.smtp_null import start_null
from bench.smtp_postfix import DOMAIN, HoldPostfix, postfix_version

TITLE = "smtp — SMTP accept, 5 KB, 20 sessions, 250 after the durable commit"
SERVERS = ("helpline", "postfix", "aiosmtpd")
LABELS = {
    "helpline": "helpline (raw mail committed before 250)",
    "postfix": "Postfix into its hold queue",
    "aiosmtpd": "aiosmtpd doing nothing",
}
LATENCY_GOAL_MS = 20.0
SERVER_BUSY = 0.9  # a server core below this share was not the bottleneck


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
            before = commit_stats(daemon.metrics_text())
            cpu_before = cpu_seconds(daemon.child.pid)
            load = _source(port, n, plan, cores)
            cpu = (cpu_seconds(daemon.child.pid) - cpu_before) / load.seconds
            commits = commit_delta(commit_stats(daemon.metrics_text()), before)
            backlog = raw_mail_states(daemon.state_dir).get("pending", 0)
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


def _med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def by_server(runs: Sequence[ServerRun], server: str) -> list[ServerRun]:
    return sorted((r for r in runs if r.server == server), key=lambda r: r.round)


def figures(runs: Sequence[ServerRun]) -> list[Figure]:
    h, p, a = (by_server(runs, s) for s in SERVERS)
    hr, pr, ar = ([r.load.rate for r in xs] for xs in (h, p, a))
    return [
        Figure(
            "helpline msg/s ÷ Postfix into its hold queue",
            [x / y for x, y in zip(hr, pr, strict=True)],
            0.8,
            1.2,
            True,
            f"helpline {_med(hr):,.0f} msg/s; Postfix {_med(pr):,.0f} msg/s",
        ),
        Figure(
            "helpline msg/s ÷ aiosmtpd doing nothing",
            [x / y for x, y in zip(hr, ar, strict=True)],
            0.5,
            0.8,
            True,
            f"helpline {_med(hr):,.0f} msg/s; aiosmtpd {_med(ar):,.0f} msg/s",
        ),
        Figure(
            "Postfix hold queue msg/s ÷ aiosmtpd doing nothing",
            [x / y for x, y in zip(pr, ar, strict=True)],
            None,
            None,
            True,
            f"Postfix {_med(pr):,.0f} msg/s; aiosmtpd {_med(ar):,.0f} msg/s",
        ),
    ]


def extra_tables(runs: Sequence[ServerRun], latency: dict[str, object], rate: float) -> str:
    lines = [
        "| server | msg/s (median, min–max) | messages per run | server core busy "  # noqa: RUF001
        "| server process CPU share | load core busy | smtp-source CPU share |",
        "|---|---|---|---|---|---|---|",
    ]
    for server in SERVERS:
        xs = by_server(runs, server)
        rates = [r.load.rate for r in xs]
        counts = sorted({r.load.messages for r in xs})
        busy = [r.load.server_core_busy for r in xs if r.load.server_core_busy is not None]
        load_busy = [r.load.load_core_busy for r in xs if r.load.load_core_busy is not None]
        procs = [r.server_cpu_share for r in xs if r.server_cpu_share is not None]
        source = [r.load.source_cpu_share for r in xs]
        lines.append(
            f"| {LABELS[server]} | {_med(rates):,.0f} ({min(rates):,.0f}–{max(rates):,.0f}) "  # noqa: RUF001
            f"| {', '.join(f'{c:,}' for c in counts)} "
            f"| {_share(_med(busy) if busy else None)} "
            f"| {_share(_med(procs) if procs else None)} "
            f"| {_share(_med(load_busy) if load_busy else None)} "
            f"| {_share(_med(source))} |"
        )
    lat = latency.get("latency_ms")
    lat = lat if isinstance(lat, dict) else {}
    p99 = float(lat.get("p99", float("nan")))
    verdict = "meets goal" if p99 <= LATENCY_GOAL_MS else "MISSES GOAL"
    lines += [
        "",
        "| latency phase (helpline, fresh daemon) | offered | p50 | p90 | p99 | max "
        "| goal p99 | verdict |",
        "|---|---|---|---|---|---|---|---|",
        f"| SMTP DATA end → 250 (durable), {latency.get('sessions')} sessions "
        f"| {rate:,.0f} msg/s (half the median helpline rate) "
        f"| {lat.get('p50')} ms | {lat.get('p90')} ms | {p99} ms | {lat.get('max')} ms "
        f"| ≤ {LATENCY_GOAL_MS:g} ms | {verdict} |",
    ]
    return "\n".join(lines)


def checks(
    runs: Sequence[ServerRun], latency: dict[str, object]
) -> tuple[list[str], list[str], list[str]]:
    problems = [p for r in runs for p in r.problems]
    warnings = [w for r in runs for w in r.warnings]
    lines = [
        "smtp-source exited 0 in every run (it stops at the first non-2xx answer) and counted "
        "every DATA as completed: "
        + ("yes" if not any("smtp-source counted" in p for p in problems) else "NO"),
    ]
    h = by_server(runs, "helpline")
    lines.append(
        "helpline committed every message before its 250, raw_mail rows = messages answered "
        "(warm-up + measured) per round: "
        + "; ".join(
            f"{_store(r)['raw_mail_rows']:,} = {r.sent:,}"
            if _store(r)["raw_mail_rows"] == r.sent
            else f"{_store(r)['raw_mail_rows']:,} ≠ {r.sent:,}"
            for r in h
        )
    )
    lines.append(
        "helpline dedup keys: smtp-source writes a distinct Message-Id into every message, so "
        "each one has its own key (distinct keys / rows / synthetic keys per round): "
        + "; ".join(
            f"{_store(r)['distinct_dedup_keys']:,}/{_store(r)['raw_mail_rows']:,}/"
            f"{_store(r)['synthetic_keys']}"
            for r in h
        )
    )
    lines.append(
        "helpline normalization after the 250 (same core, same loop): raw mails still pending "
        "when smtp-source finished, then seconds to drain them, per round: "
        + "; ".join(
            f"{r.details['pending_at_end_of_measured_run']:,} pending, "
            f"{r.details['drain_seconds_after_measured_run']} s"
            for r in h
        )
    )
    lines.append(
        "helpline raw_mail states after each round: "
        + "; ".join(str(_store(r)["raw_mail_states"]) for r in h)
        + "; events: "
        + "; ".join(str(_store(r)["events_by_type"]) for r in h)
    )
    lines.append(
        "helpline group commit in the measured runs: "
        + "; ".join(
            commit_summary(_commits(r).get("mean_batch", 0), _commits(r).get("mean_commit_ms", 0))
            for r in h
        )
    )
    lines.append(
        "Postfix: every message in the hold queue and no delivery attempt (hold / sent, "
        "per round): "
        + "; ".join(
            f"{_queues(r).get('hold', 0):,} / {r.sent:,}, {r.details['delivery_attempts']} attempts"
            for r in by_server(runs, "postfix")
        )
    )
    lines.append(
        "aiosmtpd nothing-server counted every message (counted / sent): "
        + "; ".join(f"{r.details['accepted']:,} / {r.sent:,}" for r in by_server(runs, "aiosmtpd"))
    )
    for server in SERVERS:
        busy = [r.load.server_core_busy for r in by_server(runs, server)]
        lines.append(
            f"server core busy during the measured runs, {server}: "
            + ", ".join(_share(b) for b in busy)
        )
        low = [b for b in busy if b is not None and b < SERVER_BUSY]
        if low:
            warnings.append(
                f"{server}: its core was only {min(low):.2f} busy in a measured run: something "
                "else (the load generator, the disk) limited it"
            )
    # The latency phase.
    store = latency.get("store_after")
    store = store if isinstance(store, dict) else {}
    answered = int(str(latency.get("answered", 0)))
    rows = int(str(store.get("raw_mail_rows", -1)))
    refused, errors = latency.get("refused"), latency.get("errors")
    lines.append(
        f"latency phase: {latency.get('offered')} messages offered, {answered} answered 250 "
        f"(refused {refused}, session errors {errors}), {latency.get('late')} waited more than "
        f"{latency.get('late_ms')} ms for a free session; raw_mail rows {rows} = answered; "
        f"achieved {latency.get('achieved_rate')} msg/s; the daemon used "
        f"{latency.get('daemon_cpu_share')} of its core over the phase (warm-up included)"
    )
    if refused or errors:
        problems.append(f"latency phase: refused {refused}, session errors {errors}")
    if answered != latency.get("offered"):
        problems.append(f"latency phase: {answered} of {latency.get('offered')} answered")
    if rows != answered:
        problems.append(f"latency phase: raw_mail holds {rows} rows, {answered} answered 250")
    warnings.extend(
        ending_warnings(
            "latency phase",
            latency.get("exit_code"),  # type: ignore[arg-type]
            str(latency.get("stopped_by", "")),
            [str(x) for x in latency.get("log_warnings", []) or []],  # type: ignore[attr-defined]
        )
    )
    return lines, problems, warnings


def _store(run: ServerRun) -> dict[str, object]:
    store = run.details.get("store_after")
    return store if isinstance(store, dict) else {}


def _commits(run: ServerRun) -> dict[str, float]:
    commits = run.details.get("commits_during_measured_run")
    return commits if isinstance(commits, dict) else {}


def _queues(run: ServerRun) -> dict[str, int]:
    queues = run.details.get("queues_after")
    return queues if isinstance(queues, dict) else {}


def run(
    *,
    quick: bool,
    pairs: int | None = None,
    seconds: int | None = None,
    connections: int | None = None,
    progress: Callable[[str], None] = print,
) -> Outcome:
    """Rounds of helpline, Postfix, aiosmtpd; then the latency phase; figures and checks."""
    plan = overridden(QUICK if quick else FULL, rounds=pairs, seconds=seconds, sessions=connections)
    cores = Cores.pick()
    runs: list[ServerRun] = []
    sizes: dict[str, int] = {}
    for rnd in range(1, plan.rounds + 1):
        for server in SERVERS:
            done = RUNNERS[server](rnd, sizes.get(server), plan, cores)
            sizes.setdefault(server, done.load.messages)
            runs.append(done)
            extra = ""
            if server == "helpline":
                extra = (
                    f", {done.details['pending_at_end_of_measured_run']} pending at the end, "
                    f"drained in {done.details['drain_seconds_after_measured_run']} s"
                )
            progress(
                f"round {rnd}/{plan.rounds} {server:8}: {done.load.rate:7,.0f} msg/s "
                f"({done.load.messages:,} in {done.load.seconds:.2f} s; server core busy "
                f"{_share(done.load.server_core_busy)}, "
                f"load core {_share(done.load.load_core_busy)}){extra}"
            )
    rate = 0.5 * _med([r.load.rate for r in by_server(runs, "helpline")])
    latency = run_latency_phase(rate, plan, cores)
    lat = latency.get("latency_ms")
    progress(f"latency at {rate:,.0f} msg/s offered: {lat}")
    lines, problems, warnings = checks(runs, latency)
    warnings.extend(cores.warnings())
    figs = figures(runs)
    settings = (
        f"{plan.rounds} interleaved round{'s' if plan.rounds != 1 else ''} of helpline, "
        f"Postfix (hold queue) and aiosmtpd (nothing), each run on a freshly started server on "
        f"core {cores.server} with smtp-source on core {cores.load}: {plan.sessions} parallel "
        f"sessions, {MESSAGE_BYTES:,}-byte messages, one message per connection, a fixed count "
        f"per server sized from its first warm-up for a run of about {plan.seconds} s, after a "
        f"warm-up of {plan.warmup_messages:,} messages in every run; msg/s = messages ÷ the wall "
        "clock around smtp-source. helpline: the real daemon, default durability, an `smtp` "
        "connector; its 250 comes after the raw message is committed, and normalization and "
        "ingest then run on the same core (the warm-up's backlog drained before the measured "
        f"run). Latency: a fresh daemon, {plan.sessions} open sessions of bench/smtp_latency.py "
        f"offering half the median helpline rate for {plan.latency_seconds} s after "
        f"{plan.latency_warmup:g} s of warm-up, a distinct Message-ID per message from 100 "
        "senders in turn, "
        'timed from writing the final ".\\r\\n" to reading the reply.'
    )
    data: dict[str, object] = {
        "plan": asdict(plan),
        "cores": asdict(cores),
        "postfix_version": postfix_version(),
        "messages_per_run": sizes,
        "runs": [r.as_json() for r in runs],
        "latency": latency,
        "figures": [f.as_json() for f in figs],
        "checks": lines,
        "problems": problems,
        "warnings": warnings,
    }
    return Outcome(
        TITLE, settings, figs, lines, problems, warnings, data, extra_tables(runs, latency, rate)
    )
