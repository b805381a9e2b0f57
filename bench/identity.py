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

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import TypeVar

from bench import identity_db
from bench.daemon import commit_summary, ending_warnings
from bench.identity_windows import (
    EVENTS_PER_MESSAGE,
    FULL,
    MIXES,
    QUICK,
    Plan,
    Window,
    power,
    run_window,
)
from bench.load import non_2xx_codes
from bench.procs import Cores
from bench.report import Figure, Outcome, overridden

T = TypeVar("T")

TITLE = "identity — ingest cost per message against stored contacts"
FLOOR, GOAL = 1.3, 1.1


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


def checks(windows: Sequence[Window]) -> tuple[list[str], list[str], list[str]]:
    """Correctness of the run itself: (check lines, problems that void it, warnings)."""
    problems: list[str] = []
    warnings: list[str] = []
    loads = [w.load for w in windows] + [w.warmup for w in windows if w.warmup]
    codes = non_2xx_codes(loads)
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
        warnings.extend(ending_warnings(name, w.exit_code, w.stopped_by, w.log_warnings))
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
        + commit_summary(
            _med([w.commits.get("mean_batch", 0.0) for w in windows]),
            _med([w.commits.get("mean_commit_ms", 0.0) for w in windows]),
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
    """Build or reuse the stores, then rounds of every (N, mix) window in rotating order."""
    plan = overridden(
        QUICK if quick else FULL, rounds=pairs, seconds=seconds, connections=connections
    )
    cores = Cores.pick()
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
    warnings.extend(cores.warnings())
    figs = figures(windows, plan)
    table = per_size_table(windows, plan)
    sizes = ", ".join(power(n) for n in plan.sizes)
    settings = (
        f"{plan.rounds} round{'s' if plan.rounds != 1 else ''}; in each, every stored-contact "
        f"count ({sizes}) and sender mix (mixed half new/half existing, new only, existing "
        f"only) once, in an order rotating between rounds, each window on a fresh copy of "
        f"the pre-populated store with a fresh daemon: {plan.warmup_seconds} s warm-up, "
        f"{plan.seconds} s measured, {plan.connections} keep-alive connections, wrk with "
        f"{plan.threads} thread; daemon on core {cores.server}, wrk on core {cores.load}; store on "
        "its default durability; distinct Idempotency-Key in every request. Cost per "
        "message = daemon CPU seconds (utime+stime, all threads) in the measured window ÷ "
        "messages answered 2xx in it; a figure is the median across rounds of the per-round "
        "ratio."
    )
    data: dict[str, object] = {
        "plan": asdict(plan),
        "cores": asdict(cores),
        "stores": [p.as_json() for p in prepared.values()],
        "windows": [w.as_json() for w in windows],
        "figures": [f.as_json() for f in figs],
        "per_size_table": table,
        "checks": lines,
        "problems": problems,
        "warnings": warnings,
    }
    return Outcome(TITLE, settings, figs, lines, problems, warnings, data, extra=table)
