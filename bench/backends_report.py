"""The `backends` benchmark's report: figures, the extra tables and the checks' lines."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from bench.backends_runs import Plan, Run, scenarios
from bench.daemon import commit_summary
from bench.imap_runs import latency_summary
from bench.report import Figure

GOAL_P99_MS = 1000.0


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


def ms(value: float | None) -> str:
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
            f"| {label} | {len(values)} | {ms(s.get('p50'))} | {ms(s.get('p90'))} "
            f"| {ms(s.get('p99'))} | {ms(s.get('max'))} |"
        )
    p99 = latency_summary(rows[0][1]).get("p99", float("nan"))
    verdict = "meets goal" if p99 <= GOAL_P99_MS else "MISSES GOAL"
    lines += [
        "",
        "| latency a support lead feels | p99 (all helpline messages) | goal p99 | verdict |",
        "|---|---|---|---|",
        "| customer message accepted → ticket created in a local fake backend answering in "
        f"0 ms ({plan.rate} msg/s) | {ms(p99)} | ≤ {GOAL_P99_MS:,.0f} ms | {verdict} |",
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
