"""The `backends` benchmark's runs: one latency or drain run of one side (helpline or bare).

Each run starts its own processes (the fake helpdesk, a fresh daemon or the
bare client, the ingest client), applies the load, takes the measurements and
checks them (every request 2xx, every offset received exactly once, how the
daemon ended) into a `Run`. The orchestration of pairs is bench/backends.py's.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.backend_sink import start_sink
from bench.backends_client import (
    BACKEND,
    INBOUND,
    LATE_MS,
    backend_view,
    run_client,
    sink_stats,
    wait_lag_zero,
    wait_received,
)
from bench.daemon import (
    RunningDaemon,
    commit_delta,
    commit_stats,
    ending_warnings,
    read_log,
    start_daemon,
)
from bench.imap_runs import latency_summary
from bench.procs import Child, Cores, cpu_seconds, free_port

# A whsec_ secret (24 bytes of zeros, base64): the sink does not verify, the daemon signs.
SECRET = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
RETRY_BASE, RETRY_CAP = "50ms", "500ms"
DEFAULT_CONCURRENCY = 4


@dataclass(frozen=True)
class Plan:
    pairs: int
    seconds: int  # measured seconds of the latency phase
    warmup_seconds: int  # of the latency phase, not counted
    backlog: int  # M of the 0 ms drain: figure 3's backlog
    slow_seconds: int  # the 200 ms drains are sized to last about this long
    rate: int = 50  # messages/s of the latency phase
    ingest_connections: int = 20  # the ingest client filling a backlog

    @property
    def latency_messages(self) -> int:
        return self.rate * self.seconds


QUICK = Plan(pairs=1, seconds=2, warmup_seconds=1, backlog=500, slow_seconds=1)
FULL = Plan(pairs=5, seconds=20, warmup_seconds=2, backlog=10_000, slow_seconds=10)


@dataclass(frozen=True)
class Scenario:
    delay: float
    concurrency: int
    messages: int

    @property
    def key(self) -> str:
        return f"{self.delay * 1000:.0f}ms-c{self.concurrency}"

    @property
    def label(self) -> str:
        return f"sink {self.delay * 1000:.0f} ms, concurrency {self.concurrency}"


def scenarios(plan: Plan) -> list[Scenario]:
    """0 ms at the default concurrency (the backlog figure), 200 ms at 4 and at 32."""
    slow = [
        Scenario(0.2, c, max(c, round(plan.slow_seconds * c / 0.2)))
        for c in (DEFAULT_CONCURRENCY, 32)
    ]
    return [Scenario(0.0, DEFAULT_CONCURRENCY, plan.backlog), *slow]


# -- one measured run -------------------------------------------------------------------


@dataclass
class Run:
    """One measured run of one side (product or baseline) of one phase."""

    phase: str  # "latency" or a Scenario key
    side: str  # "helpline" or "bare"
    pair: int
    messages: int
    latencies_ms: list[float] = field(default_factory=list)  # latency phase: the figure
    other_ms: list[float] = field(default_factory=list)  # product: client send → sink
    drain: dict[str, float] = field(default_factory=dict)
    details: dict[str, object] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.drain.get("events_per_s", float("nan"))

    def as_json(self) -> dict[str, object]:
        return {
            "phase": self.phase,
            "side": self.side,
            "pair": self.pair,
            "messages": self.messages,
            "latency_ms": latency_summary(self.latencies_ms),
            "other_ms": latency_summary(self.other_ms),
            "latencies_ms": [round(x, 3) for x in self.latencies_ms],
            "drain": self.drain,
            "details": self.details,
            "problems": self.problems,
            "warnings": self.warnings,
        }


def backend_section(sink_port: int, concurrency: int) -> str:
    return (
        f"[backends.{BACKEND}]\n"
        'type = "webhook"\n'
        f'url = "http://127.0.0.1:{sink_port}/hook"\n'
        f'secret = "{SECRET}"\n'
        f'types = ["{INBOUND}"]\n'
        "replies = false\n"
        f"concurrency = {concurrency}\n"
        f'retry_base = "{RETRY_BASE}"\n'
        f'retry_cap = "{RETRY_CAP}"\n'
    )


def _client_checks(run: Run, data: dict[str, Any], expect: int) -> list[list[Any]]:
    rows: list[list[Any]] = list(data["rows"])
    bad = [r for r in rows if not 200 <= int(r[3]) < 300]
    if len(rows) != expect or bad or data.get("errors"):
        run.problems.append(
            f"{run.side} {run.phase} pair {run.pair}: {len(rows)} of {expect} requests, "
            f"{len(bad)} not 2xx (statuses {sorted({int(r[3]) for r in bad})}), "
            f"errors {data.get('errors')}"
        )
    run.details["client_late"] = data.get("late", 0)
    run.details["client_elapsed_s"] = round(float(data.get("elapsed", 0)), 3)
    if data.get("late"):
        run.warnings.append(
            f"{run.side} {run.phase} pair {run.pair}: {data['late']} requests started more "
            f"than {LATE_MS:g} ms after their slot"
        )
    return rows


def _received(run: Run, stats: dict[str, Any], offsets: set[int]) -> dict[int, list[float]]:
    """offset -> [received, accepted] from the sink; checks every offset came exactly once."""
    got: dict[int, list[float]] = {}
    repeats = 0
    for received, offset, accepted in stats["records"]:
        if offset in got:
            repeats += 1
            continue
        got[int(offset)] = [float(received), float(accepted) if accepted is not None else 0.0]
    missing = offsets - set(got)
    extra = set(got) - offsets
    run.details["sink_count"] = stats["count"]
    run.details["sink_repeats"] = repeats
    run.details["sink_bad_bodies"] = stats.get("bad", 0)
    if missing or extra or stats.get("bad"):
        run.problems.append(
            f"{run.side} {run.phase} pair {run.pair}: {len(missing)} expected offsets never "
            f"reached the sink, {len(extra)} unexpected ones did, {stats.get('bad')} bad bodies"
        )
    if repeats:
        run.warnings.append(
            f"{run.side} {run.phase} pair {run.pair}: {repeats} events reached the sink twice"
        )
    return got


def _daemon_end(run: Run, daemon: RunningDaemon, outage: str = "") -> None:
    """How the stopped daemon ended and its log. Retries naming `outage` (the closed port the
    backlog was kept for) are expected and only counted; any other warning is reported."""
    levels, notable = read_log(daemon.child.log_path, limit=100_000)
    expected = [line for line in notable if outage and outage in line]
    run.details["log_levels"] = levels
    run.details["log_outage_retries"] = len(expected)
    run.details["exit_code"] = daemon.child.exit_code
    run.details["stopped_by"] = daemon.child.stopped_by
    others = [line for line in notable if not (outage and outage in line)][:5]
    run.warnings.extend(
        ending_warnings(
            f"{run.side} {run.phase} pair {run.pair}",
            daemon.child.exit_code,
            daemon.child.stopped_by,
            others,
        )
    )


def _tempdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="helpline-bench-backends-"))


def latency_product(pair: int, plan: Plan, cores: Cores) -> Run:
    """Sink (0 ms) up, a fresh daemon delivering to it, messages at a steady rate."""
    warm, count = plan.rate * plan.warmup_seconds, plan.latency_messages
    run = Run("latency", "helpline", pair, count)
    work = _tempdir()
    try:
        sink_port = free_port()
        sink = start_sink(work, sink_port, 0.0, cores.load)
        try:
            daemon = start_daemon(
                work,
                free_port(),
                cores.server,
                extra_config=backend_section(sink_port, DEFAULT_CONCURRENCY),
            )
            try:
                cpu0, wall0 = cpu_seconds(daemon.child.pid), time.monotonic()
                data = run_client(
                    work,
                    "ingest",
                    cores.load,
                    token=daemon.token,
                    timeout=60 + (warm + count) / plan.rate,
                    url=f"{daemon.base_url}/v1/messages",
                    count=count,
                    warmup=warm,
                    rate=plan.rate,
                    connections=100,
                    tag=f"l{pair}x{int(time.time())}",
                )
                wait_received(sink_port, warm + count, 30.0, sink)
                run.details["daemon_cpu_share"] = round(
                    (cpu_seconds(daemon.child.pid) - cpu0) / (time.monotonic() - wall0), 3
                )
                run.details["backend_after"] = wait_lag_zero(daemon, warm + count)
                stats = sink_stats(sink_port, records=True)
            finally:
                daemon.child.stop()
            _daemon_end(run, daemon)
        finally:
            sink.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = _client_checks(run, data, warm + count)
    offsets = {int(r[4]) for r in rows if r[4] is not None}
    got = _received(run, stats, offsets)
    run.details["body_bytes_mean"] = round(int(stats["bytes"]) / max(1, int(stats["count"])))
    for _, sent, _, _, offset, warmup in rows:
        if warmup or offset not in got:
            continue
        received, accepted = got[offset]
        run.latencies_ms.append((received - accepted) * 1000)
        run.other_ms.append((received - float(sent)) * 1000)
    return run


def latency_baseline(pair: int, plan: Plan, cores: Cores, size: int) -> Run:
    """The same sink and rate, a bare aiohttp client in the daemon's place: round trips."""
    warm, count = plan.rate * plan.warmup_seconds, plan.latency_messages
    run = Run("latency", "bare", pair, count)
    work = _tempdir()
    try:
        sink_port = free_port()
        sink = start_sink(work, sink_port, 0.0, cores.load)
        try:
            data = run_client(
                work,
                "post",
                cores.server,
                timeout=60 + (warm + count) / plan.rate,
                url=f"http://127.0.0.1:{sink_port}/hook",
                count=count,
                warmup=warm,
                rate=plan.rate,
                connections=100,
                size=size,
                tag=f"b{pair}",
            )
            stats = sink_stats(sink_port, records=True)
        finally:
            sink.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = _client_checks(run, data, warm + count)
    got = _received(run, stats, {int(r[4]) for r in rows if r[4] is not None})
    for _, _, rtt, _, offset, warmup in rows:
        if warmup or rtt is None:
            continue
        run.latencies_ms.append(float(rtt) * 1000)
        if offset in got:
            received, accepted = got[offset]
            run.other_ms.append((received - accepted) * 1000)  # one way, µs stamps
    return run


def _drain_span(stats: dict[str, Any], delay: float, messages: int) -> dict[str, float]:
    first, last = float(stats["first"]), float(stats["last"])
    span = last - first + delay
    return {
        "first_to_last_s": round(last - first, 4),
        "events_per_s": round(messages / span, 2) if span > 0 else float("nan"),
        "listening_to_first_s": round(first - float(stats["listening_at"]), 4),
        "listening_to_last_s": round(last - float(stats["listening_at"]) + delay, 4),
    }


def drain_product(pair: int, scenario: Scenario, plan: Plan, cores: Cores) -> Run:
    """A backlog of M messages ingested while the backend is down, then the sink comes up."""
    m = scenario.messages
    run = Run(scenario.key, "helpline", pair, m)
    work = _tempdir()
    try:
        sink_port = free_port()  # nobody listens there until the backlog is in: the outage
        daemon = start_daemon(
            work,
            free_port(),
            cores.server,
            extra_config=backend_section(sink_port, scenario.concurrency),
        )
        sink: Child | None = None
        try:
            data = run_client(
                work,
                "ingest",
                cores.load,
                token=daemon.token,
                timeout=120 + m / 50,
                url=f"{daemon.base_url}/v1/messages",
                count=m,
                connections=plan.ingest_connections,
                tag=f"d{pair}{scenario.key}x{int(time.time())}",
            )
            run.details["ingest_per_s"] = round(m / max(1e-9, float(data["elapsed"])), 1)
            run.details["backend_before"] = backend_view(daemon)
            metrics0 = commit_stats(daemon.metrics_text())
            cpu0, wall0 = cpu_seconds(daemon.child.pid), time.monotonic()
            sink = start_sink(work, sink_port, scenario.delay, cores.load)
            sink_cpu0 = cpu_seconds(sink.pid)
            wait_received(sink_port, m, 120 + m * scenario.delay, sink)
            wall = time.monotonic() - wall0
            run.details["daemon_cpu_share"] = round(
                (cpu_seconds(daemon.child.pid) - cpu0) / wall, 3
            )
            run.details["sink_cpu_share"] = round((cpu_seconds(sink.pid) - sink_cpu0) / wall, 3)
            view = wait_lag_zero(daemon, m)
            run.details["backend_after"] = view
            run.details["commits_during_drain"] = commit_delta(
                commit_stats(daemon.metrics_text()), metrics0
            )
            stats = sink_stats(sink_port, records=True)
        finally:
            if sink is not None:
                sink.stop()
            daemon.child.stop()
        _daemon_end(run, daemon, f"cannot connect to http://127.0.0.1:{sink_port}/hook")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = _client_checks(run, data, m)
    _received(run, stats, {int(r[4]) for r in rows if r[4] is not None})
    run.drain = _drain_span(stats, scenario.delay, m)
    before, after = run.details["backend_before"], run.details["backend_after"]
    before = before if isinstance(before, dict) else {}
    after = after if isinstance(after, dict) else {}
    if after.get("lag_events") != 0 or int(after.get("delivered", 0)) < m:
        run.problems.append(
            f"helpline {scenario.key} pair {pair}: after the drain GET /v1/backends/{BACKEND} "
            f"shows lag_events {after.get('lag_events')}, delivered {after.get('delivered')}"
        )
    if after.get("dead_letters"):
        run.problems.append(
            f"helpline {scenario.key} pair {pair}: {after['dead_letters']} dead letters"
        )
    if not before.get("lag_events") or before.get("reachable") is not False:
        run.warnings.append(
            f"helpline {scenario.key} pair {pair}: before the sink came up the backend showed "
            f"lag_events {before.get('lag_events')}, reachable {before.get('reachable')}"
        )
    return run


def drain_baseline(pair: int, scenario: Scenario, cores: Cores, size: int) -> Run:
    """A fresh sink with the same delay; a bare client POSTs M bodies, same concurrency."""
    m = scenario.messages
    run = Run(scenario.key, "bare", pair, m)
    work = _tempdir()
    try:
        sink_port = free_port()
        sink = start_sink(work, sink_port, scenario.delay, cores.load)
        try:
            sink_cpu0, wall0 = cpu_seconds(sink.pid), time.monotonic()
            data = run_client(
                work,
                "post",
                cores.server,
                timeout=120 + m * scenario.delay,
                url=f"http://127.0.0.1:{sink_port}/hook",
                count=m,
                connections=scenario.concurrency,
                size=size,
                tag=f"b{pair}",
            )
            run.details["sink_cpu_share"] = round(
                (cpu_seconds(sink.pid) - sink_cpu0) / (time.monotonic() - wall0), 3
            )
            stats = sink_stats(sink_port, records=True)
        finally:
            sink.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = _client_checks(run, data, m)
    _received(run, stats, {int(r[4]) for r in rows if r[4] is not None})
    run.drain = _drain_span(stats, scenario.delay, m)
    return run
