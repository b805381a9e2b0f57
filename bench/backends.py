"""The `backends` benchmark: the stream delivered into a ticket backend (`type = "webhook"`).

A fake helpdesk (bench/backend_sink.py, its own process on the load core)
answers every POST with 204 after 0 ms or 200 ms. The daemon (a fresh `helpline
run` on a fresh state dir, default durability, server core) has one backend
`[backends.bench]`, `type = "webhook"`, `types = ["helpline.message.inbound.v1"]`
(one delivery per message: a new customer's message also opens a conversation,
and conversation.opened is left out so M messages are M deliveries),
`retry_base = "50ms"`, `retry_cap = "500ms"` (so a drain starts within half a
second of the sink coming back; the defaults 1 s / 5 min would make "after an
outage" mean "up to 5 minutes later"), `replies = false`. Every message comes
from its own customer, so every delivery is its own conversation (lane).

Three things are measured, each with its baseline in the same run:

1. Latency: messages POSTed at a steady rate (50 msg/s, open loop) by the
   ingest client (load core) with the sink at 0 ms and concurrency 4; latency
   = the sink's receipt time - the event's `data.accepted_at` (both wall
   clock, same machine; accepted_at has millisecond precision, truncated, so
   up to 1 ms too long). Baseline: a bare aiohttp client on the server core
   (in the daemon's place) POSTing bodies of the same size at the same rate
   to the same sink; its round trip (POST sent -> 204 read).
2. Drain throughput: a backlog of M messages ingested while the backend's url
   points at a port nobody listens on (helpline keeps them, retrying), then the
   sink starts there and the drain is timed by the sink: events/s = M / (last
   receipt - first receipt + delay). At 0 ms with concurrency 4 (M = 10,000),
   at 200 ms with concurrency 4 and with concurrency 32 (M sized so a drain
   lasts ~10 s). Baseline: a bare aiohttp client (server core) POSTing M bodies
   of the same size with the same number of requests in flight to a fresh sink
   with the same delay, timed the same way: the sink's capacity.
3. The 10,000-event backlog: its drain time from the sink listening again to
   its 10,000th receipt (so the retry backoff's wait is included) against the
   baseline's time for the same 10,000 POSTs.

Run pairs are interleaved (product first in odd pairs, baseline first in even
ones); every figure is the median of per-pair ratios and is reported, never
judged, except the absolute latency p99 against TARGETS.md's goal (≤ 1 s).

The client processes live here too:

    python -m bench.backends ingest --url URL --count N [--warmup W] [--rate R]
        [--connections C] --tag T --out FILE      (token in HELPLINE_BENCH_TOKEN)
    python -m bench.backends post --url URL --count N [--warmup W] [--rate R]
        [--connections C] --size BYTES --tag T --out FILE
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.backend_sink import start_sink
from bench.daemon import (
    RunningDaemon,
    commit_delta,
    commit_stats,
    commit_summary,
    ending_warnings,
    read_log,
    start_daemon,
)
from bench.imap_runs import latency_summary
from bench.procs import (
    BenchError,
    Child,
    Cores,
    child_env,
    cpu_seconds,
    free_port,
    http_get,
    pinned,
    spawn,
    wait_exit,
)
from bench.report import Figure, Outcome, overridden

TITLE = "backends — stream delivered into a ticket backend (webhook → fake helpdesk)"
BACKEND = "bench"
INBOUND = "helpline.message.inbound.v1"
TOKEN_ENV = "HELPLINE_BENCH_TOKEN"
# A whsec_ secret (24 bytes of zeros, base64): the sink does not verify, the daemon signs.
SECRET = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
RETRY_BASE, RETRY_CAP = "50ms", "500ms"
LATE_MS = 50.0  # a paced request started this long after its slot is counted
GOAL_P99_MS = 1000.0
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


# -- the client processes ---------------------------------------------------------------

FIRST = ("Anna", "Ben", "Chiara", "Dmitri", "Elif", "Farid", "Grace", "Hiro", "Ines", "Jonas")
LAST = ("Schmidt", "Okafor", "Rossi", "Ivanova", "Yilmaz", "Haddad", "Lee", "Tanaka", "Costa")
TEXT = (
    "Hello, I ordered item {k} on the 3rd and it still has not arrived. The tracking page "
    "says the parcel left the warehouse but nothing has changed for four days now. Could "
    "you check what happened and tell me when I can expect it? My customer number is "
    "{tag}-{k}. Thank you, {name}"
)


def message_body(tag: str, k: int) -> bytes:
    """Message k of run `tag`: its own customer (a new contact, a new conversation)."""
    name = f"{FIRST[k % len(FIRST)]} {LAST[(k * 7) % len(LAST)]}"
    return orjson.dumps(
        {
            "from": {"email": f"user{tag}.{k}@example{k % 97}.com", "name": name},
            "subject": f"Order {tag}-{k} has not arrived",
            "text": TEXT.format(k=k, tag=tag, name=name),
        }
    )


def event_body(tag: str, k: int, size: int) -> bytes:
    """A CloudEvent-shaped body of `size` bytes stamped now (µs): what the bare client sends."""
    now = datetime.now(UTC).isoformat()
    event: dict[str, Any] = {
        "offset": k + 1,
        "specversion": "1.0",
        "id": f"evt_{tag}_{k:08d}",
        "type": INBOUND,
        "source": "/bench",
        "time": now,
        "data": {"accepted_at": now, "text": ""},
    }
    pad = size - len(orjson.dumps(event))
    event["data"]["text"] = "x" * max(0, pad)
    return orjson.dumps(event)


async def _drive(
    one: Callable[[int], Coroutine[Any, Any, None]], total: int, rate: float, connections: int
) -> list[int]:
    """Request k for k in 0..total-1: paced open loop at `rate` (k due at start + k / rate),
    or, with rate 0, `connections` workers one request after the other. The late ones."""
    late: list[int] = []
    if rate <= 0:
        counter = iter(range(total))

        async def worker() -> None:
            for k in counter:
                await one(k)

        await asyncio.gather(*(worker() for _ in range(connections)))
        return late
    start = time.monotonic() + 0.1
    tasks: list[asyncio.Task[None]] = []
    for k in range(total):
        due = start + k / rate
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        elif -wait * 1000 > LATE_MS:
            late.append(k)
        tasks.append(asyncio.create_task(one(k)))
    await asyncio.gather(*tasks)
    return late


async def _client(args: argparse.Namespace) -> dict[str, object]:
    import aiohttp  # the harness itself needs no aiohttp client

    total = args.warmup + args.count
    rows: list[list[object]] = []
    errors: list[str] = []
    connector = aiohttp.TCPConnector(limit=max(args.connections, 1))
    timeout = aiohttp.ClientTimeout(total=60)
    headers = {"Content-Type": "application/json"}
    if args.mode == "ingest":
        headers["Authorization"] = f"Bearer {os.environ[TOKEN_ENV]}"
    else:  # the same header names the webhook backend sends, without computing a signature
        headers["webhook-timestamp"] = str(int(time.time()))
        headers["webhook-signature"] = "v1," + "A" * 44
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=headers
    ) as session:

        async def one(k: int) -> None:
            if args.mode == "ingest":
                body = message_body(args.tag, k)
                extra = {"Idempotency-Key": f"{args.tag}-{k}"}
            else:
                body = event_body(args.tag, k, args.size)
                extra = {"webhook-id": f"evt_{args.tag}_{k:08d}"}
            sent, clock = time.time(), time.perf_counter()
            try:
                async with session.post(args.url, data=body, headers=extra) as resp:
                    raw = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as err:
                errors.append(f"{k}: {type(err).__name__} {err}")
                rows.append([k, sent, None, 0, None, k < args.warmup])
                return
            rtt = time.perf_counter() - clock
            offset = None
            if args.mode == "ingest" and status == 201:
                offset = orjson.loads(raw).get("offset")
            elif args.mode == "post":
                offset = k + 1
            rows.append([k, sent, rtt, status, offset, k < args.warmup])

        started = time.monotonic()
        late = await _drive(one, total, args.rate, args.connections)
        elapsed = time.monotonic() - started
    return {"rows": rows, "errors": errors[:20], "late": len(late), "elapsed": elapsed}


def client_main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the backends benchmark's client processes")
    parser.add_argument("mode", choices=("ingest", "post"))
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s; 0: flat out")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--size", type=int, default=1000, help="post: body bytes")
    parser.add_argument("--tag", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    result = asyncio.run(_client(args))
    Path(args.out).write_bytes(orjson.dumps(result))


# -- the harness side: one measured run -------------------------------------------------


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


def _get_json(url: str, token: str = "") -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback only
    with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - loopback only
        data = orjson.loads(resp.read())
    if not isinstance(data, dict):
        raise BenchError(f"{url} answered {data!r}")
    return data


def backend_view(daemon: RunningDaemon) -> dict[str, Any]:
    return _get_json(f"{daemon.base_url}/v1/backends/{BACKEND}", daemon.token)


def sink_stats(port: int, records: bool = False) -> dict[str, Any]:
    status, body = http_get(f"http://127.0.0.1:{port}/stats{'?records=1' if records else ''}", 10)
    data = orjson.loads(body)
    if status != 200 or not isinstance(data, dict):
        raise BenchError(f"the sink's /stats answered {status}")
    return data


def wait_received(port: int, count: int, timeout: float, sink: Child) -> dict[str, Any]:
    """Poll the sink until it has received `count` requests (the run's completion)."""
    until = time.monotonic() + timeout
    stats: dict[str, Any] = {}
    while time.monotonic() < until:
        stats = sink_stats(port)
        if int(stats["count"]) >= count:
            return stats
        if not sink.alive():
            break
        time.sleep(0.1)
    raise BenchError(
        f"the sink received {stats.get('count')} of {count} requests within {timeout:.0f} s"
    )


def wait_lag_zero(daemon: RunningDaemon, delivered: int, timeout: float = 30.0) -> dict[str, Any]:
    """GET /v1/backends/bench until lag_events is 0 and `delivered` are counted finished."""
    until = time.monotonic() + timeout
    view: dict[str, Any] = {}
    while time.monotonic() < until:
        view = backend_view(daemon)
        if view.get("lag_events") == 0 and int(view.get("delivered", 0)) >= delivered:
            return view
        time.sleep(0.05)
    return view


def run_client(
    work: Path, mode: str, core: int | None, *, token: str = "", timeout: float, **options: object
) -> dict[str, Any]:
    """One client process (this module's `ingest` or `post`), pinned; its JSON result."""
    out = work / f"{mode}.json"
    args = [sys.executable, "-m", "bench.backends", mode, "--out", str(out)]
    for key, value in options.items():
        args += [f"--{key}", str(value)]
    env = child_env()
    if token:
        env[TOKEN_ENV] = token
    child = spawn(f"the {mode} client", pinned(args, core), work / f"{mode}.log", env=env)
    try:
        wait_exit(child, timeout)
    finally:
        child.stop(5)
    data = orjson.loads(out.read_bytes())
    out.unlink()
    if not isinstance(data, dict):
        raise BenchError(f"the {mode} client wrote {data!r}")
    return data


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


# -- the benchmark ----------------------------------------------------------------------


def _med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _ratio(x: float, y: float) -> float:
    return x / y if y > 0 else float("nan")


def _pick(runs: Sequence[Run], phase: str, side: str) -> list[Run]:
    return sorted((r for r in runs if r.phase == phase and r.side == side), key=lambda r: r.pair)


def _p(run: Run, key: str) -> float:
    return latency_summary(run.latencies_ms).get(key, float("nan"))


def figures(runs: Sequence[Run], plan: Plan) -> list[Figure]:
    h, b = _pick(runs, "latency", "helpline"), _pick(runs, "latency", "bare")
    out: list[Figure] = []
    for key in ("p50", "p99"):
        hv, bv = [_p(r, key) for r in h], [_p(r, key) for r in b]
        out.append(
            Figure(
                f"accepted → ticket in the 0 ms sink, {key} ÷ bare POST round trip {key} "
                f"({plan.rate} msg/s)",
                [_ratio(x, y) for x, y in zip(hv, bv, strict=True)],
                None,
                None,
                False,
                f"helpline {_med(hv):,.1f} ms; bare {_med(bv):,.2f} ms",
            )
        )
    for scenario in scenarios(plan):
        hr = [r.rate for r in _pick(runs, scenario.key, "helpline")]
        br = [r.rate for r in _pick(runs, scenario.key, "bare")]
        out.append(
            Figure(
                f"drain throughput, {scenario.label} ({scenario.messages:,} events) ÷ bare "
                "client, same in flight",
                [_ratio(x, y) for x, y in zip(hr, br, strict=True)],
                None,
                None,
                True,
                f"helpline {_med(hr):,.1f} events/s; bare {_med(br):,.1f} events/s",
            )
        )
    first = scenarios(plan)[0]
    ht = [r.drain["listening_to_last_s"] for r in _pick(runs, first.key, "helpline")]
    bt = [r.drain["first_to_last_s"] + first.delay for r in _pick(runs, first.key, "bare")]
    wait = [r.drain["listening_to_first_s"] for r in _pick(runs, first.key, "helpline")]
    out.append(
        Figure(
            f"time to drain a {first.messages:,}-event backlog after an outage ÷ bare client's "
            "time for as many POSTs",
            [_ratio(x, y) for x, y in zip(ht, bt, strict=True)],
            None,
            None,
            False,
            f"helpline {_med(ht):,.2f} s (of which {_med(wait):.2f} s until the first "
            f"delivery); bare {_med(bt):,.2f} s",
        )
    )
    return out


def _ms(value: float | None) -> str:
    return f"{value:,.1f} ms" if value is not None and not math.isnan(value) else "—"


def extra_tables(runs: Sequence[Run], plan: Plan) -> str:
    h, b = _pick(runs, "latency", "helpline"), _pick(runs, "latency", "bare")
    rows = [
        ("helpline: `data.accepted_at` → sink receipt", [x for r in h for x in r.latencies_ms]),
        ("helpline: ingest client's POST sent → sink receipt", [x for r in h for x in r.other_ms]),
        ("bare client: POST → 204 read (round trip)", [x for r in b for x in r.latencies_ms]),
        ("bare client: POST stamped → sink receipt (one way)", [x for r in b for x in r.other_ms]),
    ]
    lines = [
        f"| latency, all measured messages pooled ({plan.rate} msg/s, sink 0 ms) | n | p50 "
        "| p90 | p99 | max |",
        "|---|---|---|---|---|---|",
    ]
    for label, values in rows:
        s = latency_summary(values)
        lines.append(
            f"| {label} | {len(values)} | {_ms(s.get('p50'))} | {_ms(s.get('p90'))} "
            f"| {_ms(s.get('p99'))} | {_ms(s.get('max'))} |"
        )
    p99 = latency_summary(rows[0][1]).get("p99", float("nan"))
    verdict = "meets goal" if p99 <= GOAL_P99_MS else "MISSES GOAL"
    lines += [
        "",
        "| latency a support lead feels | p99 (all helpline messages) | goal p99 | verdict |",
        "|---|---|---|---|",
        "| customer message accepted → ticket created in a local fake backend answering in "
        f"0 ms ({plan.rate} msg/s) | {_ms(p99)} | ≤ {GOAL_P99_MS:,.0f} ms | {verdict} |",
        "",
        "| drain run | pair | helpline events/s | bare events/s | ratio | helpline: sink up → "
        "first / → last delivery | daemon CPU | sink CPU (helpline / bare) | writes per commit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario in scenarios(plan):
        for hr, br in zip(
            _pick(runs, scenario.key, "helpline"), _pick(runs, scenario.key, "bare"), strict=True
        ):
            commits = hr.details.get("commits_during_drain")
            commits = commits if isinstance(commits, dict) else {}
            batch = commit_summary(commits.get("mean_batch", 0), commits.get("mean_commit_ms", 0))
            lines.append(
                f"| {scenario.label}, {scenario.messages:,} events | {hr.pair} "
                f"| {hr.rate:,.1f} | {br.rate:,.1f} | {_ratio(hr.rate, br.rate):.3f} "
                f"| {hr.drain.get('listening_to_first_s', 0):.2f} s / "
                f"{hr.drain.get('listening_to_last_s', 0):.2f} s "
                f"| {hr.details.get('daemon_cpu_share')} "
                f"| {hr.details.get('sink_cpu_share')} / {br.details.get('sink_cpu_share')} "
                f"| {batch} |"
            )
    return "\n".join(lines)


def checks(runs: Sequence[Run]) -> tuple[list[str], list[str], list[str]]:
    problems = [p for r in runs for p in r.problems]
    warnings = [w for r in runs for w in r.warnings]
    helpline = [r for r in runs if r.side == "helpline"]
    drains = [r for r in helpline if r.phase != "latency"]
    repeats = sum(int(str(r.details.get("sink_repeats", 0))) for r in runs)
    lines = [
        f"every request answered 2xx, every expected offset received by the sink exactly "
        f"once, no bad bodies: {'yes' if not problems else 'NO (see PROBLEM lines)'}; events "
        f"that reached the sink twice: {repeats}",
        "after each drain GET /v1/backends/bench showed lag_events 0, delivered ≥ M, no dead "
        "letters (before the sink came up: lag_events, reachable): "
        + "; ".join(
            f"{r.phase} p{r.pair} {_view(r, 'backend_before')} → {_view(r, 'backend_after')}"
            for r in drains
        ),
        "ingest rate while filling the backlogs (msg/s): "
        + ", ".join(f"{r.details.get('ingest_per_s')}" for r in drains),
        "daemons stopped by SIGTERM with status 0: "
        + ", ".join(
            f"{r.details.get('stopped_by')} {r.details.get('exit_code')}" for r in helpline
        ),
        "paced requests started > 50 ms late (latency phase): "
        + ", ".join(
            f"{r.side} p{r.pair} {r.details.get('client_late')}"
            for r in runs
            if r.phase == "latency"
        ),
    ]
    return lines, problems, warnings


def _view(run: Run, key: str) -> str:
    view = run.details.get(key)
    if not isinstance(view, dict):
        return "?"
    return (
        f"lag {view.get('lag_events')}, reachable {view.get('reachable')}, "
        f"delivered {view.get('delivered')}, retries {view.get('retries')}"
    )


def run(
    *,
    quick: bool,
    pairs: int | None = None,
    seconds: int | None = None,
    connections: int | None = None,
    progress: Callable[[str], None] = print,
) -> Outcome:
    """Interleaved pairs: latency phase, then each drain scenario, helpline and bare."""
    plan = overridden(QUICK if quick else FULL, pairs=pairs, seconds=seconds)
    cores = Cores.pick()
    runs: list[Run] = []
    size = 0  # the mean event body the daemon sent, for the bare client's bodies

    def note(done: Run) -> None:
        runs.append(done)
        if done.phase == "latency":
            s = latency_summary(done.latencies_ms)
            what = f"p50 {_ms(s.get('p50'))}, p99 {_ms(s.get('p99'))}"
        else:
            what = (
                f"{done.rate:,.1f} events/s, sink up → last "
                f"{done.drain.get('listening_to_last_s', 0):.2f} s"
            )
        extra = f", {len(done.problems)} problem(s)" if done.problems else ""
        progress(f"pair {done.pair}/{plan.pairs} {done.phase:9} {done.side:8}: {what}{extra}")

    for pair in range(1, plan.pairs + 1):
        product_first = pair % 2 == 1 or not size
        order = ("helpline", "bare") if product_first else ("bare", "helpline")
        for side in order:
            if side == "helpline":
                done = latency_product(pair, plan, cores)
                size = size or int(str(done.details["body_bytes_mean"]))
                note(done)
            else:
                note(latency_baseline(pair, plan, cores, size))
        for scenario in scenarios(plan):
            for side in order:
                if side == "helpline":
                    note(drain_product(pair, scenario, plan, cores))
                else:
                    note(drain_baseline(pair, scenario, cores, size))
    lines, problems, warnings = checks(runs)
    warnings.extend(cores.warnings())
    if connections is not None:
        warnings.append("--connections does not apply to the backends benchmark: ignored")
    figs = figures(runs, plan)
    scen = "; ".join(f"{s.label}: M = {s.messages:,}" for s in scenarios(plan))
    settings = (
        f"{plan.pairs} interleaved pair{'s' if plan.pairs != 1 else ''} (helpline first in odd "
        "pairs, the baseline first in even ones). helpline: a fresh daemon (default "
        f"durability) on core {cores.server} per run with one `[backends.{BACKEND}]` "
        f'`type = "webhook"`, `types = ["{INBOUND}"]` (so one message = one delivery; '
        "conversation.opened is not sent), `replies = false`, `retry_base = "
        f'"{RETRY_BASE}"`, `retry_cap = "{RETRY_CAP}"`, every request signed; every message '
        "from its own customer (its own conversation, its own lane). The fake helpdesk "
        f"(bench/backend_sink.py, aiohttp, no signature check) on core {cores.load}: 204 "
        f"after 0 or 200 ms. Latency: {plan.warmup_seconds} s warm-up then {plan.seconds} s "
        f"at {plan.rate} msg/s (open loop, ingest client on core {cores.load}), sink 0 ms, "
        f"concurrency {DEFAULT_CONCURRENCY}; accepted_at → sink receipt against a bare aiohttp "
        f"client's POST round trip (core {cores.server}, same body size and rate). Drains: "
        "the backlog ingested (all 201) while the webhook url points at a closed port, then "
        "the sink starts there; events/s = M ÷ (last receipt - first receipt + the sink's "
        "delay), against a bare aiohttp client POSTing M bodies of the same size with as many "
        f"in flight as the backend's concurrency; {scen}. Figures: medians of per-pair "
        "ratios, reported (TARGETS.md judges only the absolute p99, below)."
    )
    data: dict[str, object] = {
        "plan": asdict(plan),
        "scenarios": [{**asdict(s), "key": s.key} for s in scenarios(plan)],
        "cores": asdict(cores),
        "body_bytes": size,
        "backend_config": backend_section(0, DEFAULT_CONCURRENCY).replace(SECRET, "whsec_…"),
        "runs": [r.as_json() for r in runs],
        "figures": [f.as_json() for f in figs],
        "goal_p99_ms": GOAL_P99_MS,
        "checks": lines,
        "problems": problems,
        "warnings": warnings,
    }
    return Outcome(TITLE, settings, figs, lines, problems, warnings, data, extra_tables(runs, plan))


if __name__ == "__main__":
    client_main()
