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

The client processes (bench/backends_client.py) are run through this module:

    python -m bench.backends ingest --url URL --count N [--warmup W] [--rate R]
        [--connections C] --tag T --out FILE      (token in HELPLINE_BENCH_TOKEN)
    python -m bench.backends post --url URL --count N [--warmup W] [--rate R]
        [--connections C] --size BYTES --tag T --out FILE
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

from bench.backends_client import BACKEND, INBOUND, client_main
from bench.backends_report import GOAL_P99_MS, checks, extra_tables, figures, ms
from bench.backends_runs import (
    DEFAULT_CONCURRENCY,
    FULL,
    QUICK,
    RETRY_BASE,
    RETRY_CAP,
    SECRET,
    Run,
    backend_section,
    drain_baseline,
    drain_product,
    latency_baseline,
    latency_product,
    scenarios,
)
from bench.imap_runs import latency_summary
from bench.procs import Cores
from bench.report import Outcome, overridden

TITLE = "backends — stream delivered into a ticket backend (webhook → fake helpdesk)"


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
            what = f"p50 {ms(s.get('p50'))}, p99 {ms(s.get('p99'))}"
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
