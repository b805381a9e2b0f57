"""The `api` benchmark: POST /v1/messages full ingest against a bare aiohttp handler.

Each pair runs the product (a fresh daemon on a fresh state dir, default
durability) and then the baseline (bench/baseline_app.py, same JSON parsing,
no storage), each on core 0 with wrk on core 1, and measures the disk's raw
fsync rate in the daemon's state dir. Every request carries a distinct
Idempotency-Key and a distinct sender, so each one is a new message from a new
contact in a new conversation: the full ingest path, never the duplicate one.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.baseline_app import start_baseline
from bench.daemon import (
    commit_delta,
    commit_stats,
    commit_summary,
    ending_warnings,
    read_log,
    start_daemon,
)
from bench.fsync_rate import run_pinned as fsync_rate
from bench.load import LoadResult, non_2xx_codes, run_wrk
from bench.procs import Cores, cpu_seconds, free_port
from bench.report import Figure, Outcome, overridden

TITLE = "api — POST /v1/messages full ingest"
NO_TOKEN = "none"  # the baseline checks no token; wrk still sends the header
SERVER_BUSY = 0.9  # a baseline server below this CPU share was not the bottleneck


@dataclass(frozen=True)
class Plan:
    """How long and how hard: the quick plan is for CI, the full one for RESULTS.md."""

    pairs: int
    seconds: int
    connections: int
    warmup_seconds: int
    fsync_seconds: float
    threads: int = 1


QUICK = Plan(pairs=1, seconds=3, connections=10, warmup_seconds=0, fsync_seconds=1.0)
FULL = Plan(pairs=5, seconds=10, connections=50, warmup_seconds=2, fsync_seconds=2.0)


@dataclass
class ProductRun:
    """One daemon run: its load figures and what the daemon says about itself afterwards."""

    load: LoadResult
    warmup: LoadResult | None
    fsync: dict[str, float]
    server_cpu_share: float
    commits: dict[str, float]
    readyz: dict[str, object]
    exit_code: int | None
    stopped_by: str
    log_levels: dict[str, int] = field(default_factory=dict)
    log_warnings: list[str] = field(default_factory=list)

    @property
    def head_offset(self) -> int:
        store = self.readyz.get("store")
        return int(store.get("head_offset", 0)) if isinstance(store, dict) else 0

    @property
    def created(self) -> int:
        """Messages answered 201 over warm-up and measured run: all must be in the stream."""
        return self.load.count(201) + (self.warmup.count(201) if self.warmup else 0)

    @property
    def durable_per_s(self) -> float:
        return self.load.count(201) / self.load.seconds if self.load.seconds else 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "load": self.load.as_json(),
            "warmup": self.warmup.as_json() if self.warmup else None,
            "fsync": self.fsync,
            "durable_per_s": round(self.durable_per_s, 1),
            "server_cpu_share": round(self.server_cpu_share, 3),
            "commits_during_measured_run": self.commits,
            "readyz_after": self.readyz,
            "head_offset": self.head_offset,
            "answered_201_total": self.created,
            "exit_code": self.exit_code,
            "stopped_by": self.stopped_by,
            "log_levels": self.log_levels,
            "log_warnings": self.log_warnings,
        }


@dataclass
class BaselineRun:
    load: LoadResult
    server_cpu_share: float
    exit_code: int | None

    def as_json(self) -> dict[str, object]:
        return {
            "load": self.load.as_json(),
            "server_cpu_share": round(self.server_cpu_share, 3),
            "exit_code": self.exit_code,
        }


def _tempdir(kind: str) -> Path:
    # The default temp dir (/tmp): its filesystem is the one machine.facts records.
    return Path(tempfile.mkdtemp(prefix=f"helpline-bench-{kind}-"))


def _wrk(url: str, *, token: str, tag: str, seconds: int, plan: Plan, cores: Cores) -> LoadResult:
    return run_wrk(
        url,
        token=token,
        tag=tag,
        seconds=seconds,
        connections=plan.connections,
        threads=plan.threads,
        core=cores.load,
    )


def run_product(pair: int, plan: Plan, cores: Cores) -> ProductRun:
    """One product run: fsync baseline, daemon up, warm-up, measured run, readiness, stop."""
    work = _tempdir("daemon")
    try:
        fsync = fsync_rate(work, plan.fsync_seconds, cores.server)
        daemon = start_daemon(work, free_port(), cores.server)
        url = f"{daemon.base_url}/v1/messages"
        warm: LoadResult | None = None
        try:
            if plan.warmup_seconds:
                warm = _wrk(
                    url,
                    token=daemon.token,
                    tag=f"w{pair}",
                    seconds=plan.warmup_seconds,
                    plan=plan,
                    cores=cores,
                )
            before = commit_stats(daemon.metrics_text())
            cpu_before = cpu_seconds(daemon.child.pid)
            load = _wrk(
                url,
                token=daemon.token,
                tag=f"m{pair}",
                seconds=plan.seconds,
                plan=plan,
                cores=cores,
            )
            server_cpu = (cpu_seconds(daemon.child.pid) - cpu_before) / load.seconds
            commits = commit_delta(commit_stats(daemon.metrics_text()), before)
            ready = daemon.readyz()
        finally:
            daemon.child.stop()
        levels, notable = read_log(daemon.child.log_path)
        return ProductRun(
            load=load,
            warmup=warm,
            fsync=fsync,
            server_cpu_share=server_cpu,
            commits=commits,
            readyz=ready,
            exit_code=daemon.child.exit_code,
            stopped_by=daemon.child.stopped_by,
            log_levels=levels,
            log_warnings=notable,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_baseline(pair: int, plan: Plan, cores: Cores) -> BaselineRun:
    """One baseline run: the bare handler up, warm-up, measured run, stop."""
    work = _tempdir("baseline")
    try:
        port = free_port()
        child = start_baseline(work, port, cores.server)
        url = f"http://127.0.0.1:{port}/v1/messages"
        try:
            if plan.warmup_seconds:
                _wrk(
                    url,
                    token=NO_TOKEN,
                    tag=f"w{pair}",
                    seconds=plan.warmup_seconds,
                    plan=plan,
                    cores=cores,
                )
            cpu_before = cpu_seconds(child.pid)
            load = _wrk(
                url, token=NO_TOKEN, tag=f"m{pair}", seconds=plan.seconds, plan=plan, cores=cores
            )
            server_cpu = (cpu_seconds(child.pid) - cpu_before) / load.seconds
        finally:
            child.stop()
        return BaselineRun(load, server_cpu, child.exit_code)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def figures(products: list[ProductRun], baselines: list[BaselineRun]) -> list[Figure]:
    """The four rows of the table, one ratio per pair."""
    p = [r.load for r in products]
    b = [r.load for r in baselines]
    med = statistics.median
    durable = [r.durable_per_s for r in products]
    fsync = [r.fsync["rate"] for r in products]
    fsync_p99 = [r.fsync["p99_ms"] for r in products]

    def lat(runs: list[LoadResult], key: str) -> list[float]:
        return [r.latency_ms[key] for r in runs]

    def ratios(xs: list[float], ys: list[float]) -> list[float]:
        return [x / y if y else float("inf") for x, y in zip(xs, ys, strict=True)]

    return [
        Figure(
            "throughput ÷ bare handler",
            ratios([x.rps for x in p], [y.rps for y in b]),
            0.15,
            0.30,
            True,
            f"product {med(x.rps for x in p):,.0f} req/s; bare {med(y.rps for y in b):,.0f} req/s",
        ),
        Figure(
            "p99 latency ÷ bare p99",
            ratios(lat(p, "p99"), lat(b, "p99")),
            6.0,
            3.0,
            False,
            f"product {med(lat(p, 'p99')):.2f} ms; bare {med(lat(b, 'p99')):.2f} ms",
        ),
        Figure(
            "p50 latency ÷ bare p50",
            ratios(lat(p, "p50"), lat(b, "p50")),
            None,
            None,
            False,
            f"product {med(lat(p, 'p50')):.2f} ms; bare {med(lat(b, 'p50')):.2f} ms",
        ),
        Figure(
            "durable messages/s ÷ raw fsync rate",
            ratios(durable, fsync),
            0.6,
            1.1,
            True,
            f"{med(durable):,.0f} msg/s durable (201); 1 KB append + fsync "
            f"{med(fsync):,.0f}/s (p99 {med(fsync_p99):.2f} ms)",
        ),
    ]


def checks(
    products: list[ProductRun], baselines: list[BaselineRun]
) -> tuple[list[str], list[str], list[str]]:
    """Correctness of the run itself: (check lines, problems that void it, warnings)."""
    p = [r.load for r in products] + [r.warmup for r in products if r.warmup]
    b = [r.load for r in baselines]
    problems: list[str] = []
    warnings: list[str] = []
    p_codes, b_codes = non_2xx_codes(p), non_2xx_codes(b)
    p_non2xx, b_non2xx = sum(p_codes.values()), sum(b_codes.values())
    p_503 = p_codes.get(503, 0)
    sock = sum(x.socket_errors for x in p + b)
    dup = sum(x.count(200) for x in p)
    if p_non2xx:
        problems.append(f"the daemon answered {p_non2xx} non-2xx responses: {p_codes}")
    if p_503:
        problems.append(f"the daemon pushed back with {p_503} answers 503 (store overloaded)")
    if b_non2xx:
        problems.append(f"the baseline answered {b_non2xx} non-2xx responses: {b_codes}")
    if sock:
        problems.append(f"{sock} socket errors or timeouts in wrk")
    if dup:
        warnings.append(f"{dup} answers were 200 (duplicate) although every key was distinct")
    lines = [
        f"non-2xx answers (warm-up included): product {p_non2xx} (503: {p_503}), "
        f"baseline {b_non2xx}; wrk socket errors/timeouts: {sock}; 200-duplicates: {dup}",
    ]
    heads = []
    for i, run in enumerate(products, start=1):
        heads.append(f"{run.head_offset:,} ≥ {run.created:,}")
        if run.head_offset < run.created:
            problems.append(
                f"pair {i}: stream head offset {run.head_offset} < {run.created} answered 201"
            )
        warnings.extend(
            ending_warnings(f"pair {i}", run.exit_code, run.stopped_by, run.log_warnings)
        )
    lines.append(
        "durability, stream head offset after the run ≥ messages answered 201 (warm-up "
        "included; a new contact's message also opens a conversation, ~2 events each): "
        + "; ".join(heads)
    )
    pshares = [r.server_cpu_share for r in products]
    bshares = [r.server_cpu_share for r in baselines]
    lines.append(
        "server CPU share of its core during the measured runs: "
        f"product {', '.join(f'{s:.2f}' for s in pshares)}; "
        f"baseline {', '.join(f'{s:.2f}' for s in bshares)}"
    )
    if min(bshares) < SERVER_BUSY:
        warnings.append(
            f"the baseline server used as little as {min(bshares):.2f} of its core: something "
            "else (the load generator, a noisy neighbour) limited it"
        )
    lines.append(
        "group commit in the measured runs: "
        + "; ".join(
            commit_summary(r.commits.get("mean_batch", 0), r.commits.get("mean_commit_ms", 0))
            for r in products
        )
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
    """All pairs, product then baseline (A B A B ...), and what they add up to."""
    plan = overridden(
        QUICK if quick else FULL, pairs=pairs, seconds=seconds, connections=connections
    )
    cores = Cores.pick()
    products: list[ProductRun] = []
    baselines: list[BaselineRun] = []
    for pair in range(1, plan.pairs + 1):
        product = run_product(pair, plan, cores)
        products.append(product)
        progress(
            f"pair {pair}/{plan.pairs} product:  {product.load.rps:9,.0f} req/s, "
            f"p50 {product.load.latency_ms['p50']:.2f} ms, "
            f"p99 {product.load.latency_ms['p99']:.2f} ms, "
            f"non-2xx {product.load.non_2xx}, fsync {product.fsync['rate']:,.0f}/s"
        )
        baseline = run_baseline(pair, plan, cores)
        baselines.append(baseline)
        progress(
            f"pair {pair}/{plan.pairs} baseline: {baseline.load.rps:9,.0f} req/s, "
            f"p50 {baseline.load.latency_ms['p50']:.2f} ms, "
            f"p99 {baseline.load.latency_ms['p99']:.2f} ms, non-2xx {baseline.load.non_2xx}"
        )
    lines, problems, warnings = checks(products, baselines)
    warnings.extend(cores.warnings())
    settings = (
        f"{plan.pairs} interleaved product/baseline pair{'s' if plan.pairs != 1 else ''} of "
        f"{plan.seconds} s runs (each after a {plan.warmup_seconds} s warm-up), "
        f"{plan.connections} keep-alive connections, wrk with {plan.threads} thread; daemon "
        f"and baseline on core {cores.server}, wrk on core {cores.load}; store on its "
        "default durability; distinct Idempotency-Key and sender in every request."
    )
    figs = figures(products, baselines)
    data: dict[str, object] = {
        "plan": asdict(plan),
        "cores": asdict(cores),
        "pairs": [
            {"product": a.as_json(), "baseline": b.as_json()}
            for a, b in zip(products, baselines, strict=True)
        ],
        "figures": [f.as_json() for f in figs],
        "checks": lines,
        "problems": problems,
        "warnings": warnings,
    }
    return Outcome(TITLE, settings, figs, lines, problems, warnings, data)
