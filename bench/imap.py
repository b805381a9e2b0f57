"""The `imap` benchmark: APPEND to a Dovecot mailbox → the message in helpline's stream.

One private Dovecot (bench/imap_dovecot.py, IDLE, `mailbox_idle_check_interval
= 1 secs`) serves the whole benchmark on the load core. Interleaved pairs of
runs (helpline first in odd pairs, the watcher first in even ones), each on a
fresh folder:

- helpline: a freshly started daemon (`helpline run`, default durability,
  fresh state dir) on the server core with one `imap` connector (IDLE) on the
  folder; the appender (bench/imap_client.py, load core) follows `GET
  /v1/stream` as server-sent events and takes the time each
  helpline.message.inbound.v1 carrying one of its Message-IDs is read.
- watcher (the baseline): a bare IMAPClient on the folder in IDLE, on the
  server core in the daemon's place, taking the time each `* n EXISTS` is read:
  Dovecot's own notification latency, the floor any IMAP consumer faces.

The appender APPENDs one message at a time at a fixed pace (one every 200 ms;
a few warm-up messages first) and takes the time each APPEND's OK was read;
latency = seen - APPEND done, one clock (CLOCK_MONOTONIC) for every process.
Figures are medians over pairs of the per-pair ratios helpline ÷ watcher; the
absolute p99 over all helpline messages is judged against the 2 s goal.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict

from bench.daemon import commit_summary
from bench.imap_client import SENDERS
from bench.imap_dovecot import dovecot_version
from bench.imap_runs import FULL, QUICK, SIDES, SideRun, latency_summary, run_pairs
from bench.procs import Cores
from bench.report import Figure, Outcome, overridden

TITLE = "imap — message appended to a Dovecot mailbox (IDLE) → in helpline's stream"
LABELS = {
    "helpline": "helpline: APPEND done → inbound event read from `GET /v1/stream` (SSE)",
    "watcher": "bare IMAPClient IDLE watcher: APPEND done → `* n EXISTS` read",
}
GOAL_P99_MS = 2000.0


def _med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def by_side(runs: Sequence[SideRun], side: str) -> list[SideRun]:
    return sorted((r for r in runs if r.side == side), key=lambda r: r.pair)


def pooled(runs: Sequence[SideRun], side: str) -> list[float]:
    return [x for r in by_side(runs, side) for x in r.latencies_ms]


def _ratio(x: float, y: float) -> float:
    return x / y if y > 0 else float("nan")


def figures(runs: Sequence[SideRun]) -> list[Figure]:
    h, w = by_side(runs, "helpline"), by_side(runs, "watcher")
    hp99, wp99 = [r.p99 for r in h], [r.p99 for r in w]
    hp50, wp50 = [r.p50 for r in h], [r.p50 for r in w]
    return [
        Figure(
            "helpline APPEND → stream p99 ÷ bare IDLE watcher APPEND → EXISTS p99",
            [_ratio(x, y) for x, y in zip(hp99, wp99, strict=True)],
            None,
            None,
            False,
            f"helpline p99 {_med(hp99):,.1f} ms; watcher p99 {_med(wp99):,.1f} ms",
        ),
        Figure(
            "same, p50 ÷ p50",
            [_ratio(x, y) for x, y in zip(hp50, wp50, strict=True)],
            None,
            None,
            False,
            f"helpline p50 {_med(hp50):,.1f} ms; watcher p50 {_med(wp50):,.1f} ms",
        ),
    ]


def _ms(value: object) -> str:
    return f"{value:,.1f} ms" if isinstance(value, (int, float)) else "—"


def extra_tables(runs: Sequence[SideRun]) -> str:
    lines = [
        "| all measured messages, pooled over the runs | messages | p50 | p90 | p99 | max | min "
        "| APPEND round trip p50 / p99 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for side in SIDES:
        s = latency_summary(pooled(runs, side))
        rt = latency_summary([x for r in by_side(runs, side) for x in r.append_ms])
        lines.append(
            f"| {LABELS[side]} | {len(pooled(runs, side))} | {_ms(s.get('p50'))} "
            f"| {_ms(s.get('p90'))} | {_ms(s.get('p99'))} | {_ms(s.get('max'))} "
            f"| {_ms(s.get('min'))} | {_ms(rt.get('p50'))} / {_ms(rt.get('p99'))} |"
        )
    h = latency_summary(pooled(runs, "helpline"))
    p99 = h.get("p99", float("nan"))
    verdict = "meets goal" if p99 <= GOAL_P99_MS else "MISSES GOAL"
    lines += [
        "",
        "| latency a support lead feels | p99 (all helpline messages) | goal p99 | verdict |",
        "|---|---|---|---|",
        f"| message appended to an IMAP mailbox (Dovecot, IDLE) → in the stream | {_ms(p99)} "
        f"| ≤ {GOAL_P99_MS:,.0f} ms | {verdict} |",
        "",
        "| pair | order | helpline p50 / p99 / max | watcher p50 / p99 / max "
        "| p99 ratio | p99 added by helpline |",
        "|---|---|---|---|---|---|",
    ]
    for hr, wr in zip(by_side(runs, "helpline"), by_side(runs, "watcher"), strict=True):
        hs, ws = hr.summary, wr.summary
        order = "helpline, watcher" if hr.position == 1 else "watcher, helpline"
        lines.append(
            f"| {hr.pair} | {order} "
            f"| {_ms(hs.get('p50'))} / {_ms(hs.get('p99'))} / {_ms(hs.get('max'))} "
            f"| {_ms(ws.get('p50'))} / {_ms(ws.get('p99'))} / {_ms(ws.get('max'))} "
            f"| {_ratio(hr.p99, wr.p99):.2f} | {_ms(hr.p99 - wr.p99)} |"
        )
    return "\n".join(lines)


def checks(
    runs: Sequence[SideRun], messages: int, warmup: int, info: dict[str, object]
) -> tuple[list[str], list[str], list[str]]:
    problems = [p for r in runs for p in r.problems]
    warnings = [w for r in runs for w in r.warnings]
    h, w = by_side(runs, "helpline"), by_side(runs, "watcher")
    lines = [
        "every APPEND answered OK with APPENDUID 1..n on its fresh folder (warm-up + measured "
        "per run): "
        + ", ".join(f"{r.side[0]}{r.pair} {r.appended}" for r in runs)
        + f" (each should be {warmup + messages})",
        "helpline: every measured message read from the stream exactly once as "
        "helpline.message.inbound.v1 with its Message-ID (seen / measured, duplicates, per run): "
        + "; ".join(f"{len(r.latencies_ms)}/{messages}, {len(r.duplicates)}" for r in h),
        "helpline: the connector's `fetched` counter = messages appended, reconnects, state after "
        "each run: " + "; ".join(_connector_line(r) for r in h),
        "watcher: an EXISTS read for every measured message (seen / measured per run): "
        + "; ".join(f"{len(r.latencies_ms)}/{messages}" for r in w),
        "APPENDs started more than 50 ms after their slot (the pace held), per run: "
        + ", ".join(f"{r.side[0]}{r.pair} {r.late}" for r in runs),
        "helpline group commit during each run (the daemon's own commits, warm-up included; "
        "slow ones mean a busy disk), and the daemon's CPU share of its core: "
        + "; ".join(_commit_line(r) for r in h),
        "daemons stopped by SIGTERM with status 0: "
        + ", ".join(f"{r.details.get('stopped_by')} {r.details.get('exit_code')}" for r in h),
    ]
    for side in SIDES:
        low = [x for x in pooled(runs, side) if x < 0]
        if low:
            lines.append(
                f"{side}: {len(low)} message(s) seen before the APPEND's OK was read (the push "
                f"raced the tagged answer), the earliest {min(low):.1f} ms"
            )
    dovecot_errors = info.get("dovecot_log_problems")
    if isinstance(dovecot_errors, list) and dovecot_errors:
        warnings.extend(f"Dovecot log: {line}" for line in dovecot_errors)
    lines.append(
        "Dovecot's log has no Error/Fatal/Panic line: "
        + ("yes" if not dovecot_errors else "NO (see warnings)")
    )
    late = sum(r.late for r in runs)
    if late:
        warnings.append(f"{late} APPEND(s) started more than 50 ms after their slot")
    return lines, problems, warnings


def _commit_line(run: SideRun) -> str:
    commits = run.details.get("commits")
    commits = commits if isinstance(commits, dict) else {}
    return (
        commit_summary(commits.get("mean_batch", 0), commits.get("mean_commit_ms", 0))
        + f", {run.details.get('commits_over_100ms')} over 100 ms"
        + f", CPU {run.details.get('daemon_cpu_share')}"
    )


def _connector_line(run: SideRun) -> str:
    after = run.details.get("connector_after")
    after = after if isinstance(after, dict) else {}
    counters = after.get("counters")
    counters = counters if isinstance(counters, dict) else {}
    return (
        f"{counters.get('fetched')} = {run.appended}, {counters.get('reconnects')}, "
        f"{after.get('state')}"
    )


def run(
    *,
    quick: bool,
    pairs: int | None = None,
    seconds: int | None = None,
    connections: int | None = None,
    progress: Callable[[str], None] = print,
) -> Outcome:
    """Interleaved pairs of helpline and watcher runs on one Dovecot; figures and checks.
    `connections` does not apply (one mailbox, one connection per side)."""
    plan = overridden(QUICK if quick else FULL, pairs=pairs, seconds=seconds)
    cores = Cores.pick()
    runs, info = run_pairs(plan, cores, progress)
    lines, problems, warnings = checks(runs, plan.messages, plan.warmup, info)
    warnings.extend(cores.warnings())
    if connections is not None:
        warnings.append("--connections does not apply to the imap benchmark: ignored")
    figs = figures(runs)
    p99_note = (
        f"with {plan.messages} messages a run, a run's p99 is its maximum"
        if int(0.99 * plan.messages) >= plan.messages - 1
        else f"{plan.messages} messages a run"
    )
    settings = (
        f"{plan.pairs} interleaved pair{'s' if plan.pairs != 1 else ''} of runs (helpline "
        "first in odd pairs, the watcher first in even ones), each on a fresh folder of one "
        f"private Dovecot ({dovecot_version()}; plain IMAP on loopback, "
        f"`mailbox_idle_check_interval = 1 secs`, on core {cores.load}). Per run "
        f"{plan.warmup} warm-up then {plan.messages} measured APPENDs (~2.2 KB, a distinct "
        f"Message-ID each, {SENDERS} senders in turn), one every {plan.interval * 1000:.0f} ms "
        f"from bench/imap_client.py on core {cores.load}. helpline: a freshly started daemon "
        f"(default durability) on core {cores.server} with one `imap` connector (IDLE) on the "
        "folder; latency = APPEND's OK read → its helpline.message.inbound.v1 read from "
        "`GET /v1/stream` (SSE) by the appender. Baseline: a bare IMAPClient in IDLE on core "
        f"{cores.server} in the daemon's place; latency = APPEND's OK read → its `* n EXISTS` "
        f"read. p99 is nearest rank ({p99_note}); figures are "
        "medians of per-pair ratios helpline ÷ watcher (no bar in TARGETS.md: reported)."
    )
    data: dict[str, object] = {
        "plan": {**asdict(plan), "messages": plan.messages},
        "cores": asdict(cores),
        "dovecot_version": dovecot_version(),
        "pooled_ms": {side: latency_summary(pooled(runs, side)) for side in SIDES},
        "goal_p99_ms": GOAL_P99_MS,
        "runs": [r.as_json() for r in runs],
        "dovecot": info,
        "figures": [f.as_json() for f in figs],
        "checks": lines,
        "problems": problems,
        "warnings": warnings,
    }
    return Outcome(TITLE, settings, figs, lines, problems, warnings, data, extra_tables(runs))
