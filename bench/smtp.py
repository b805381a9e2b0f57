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

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict

from bench.daemon import commit_summary, ending_warnings
from bench.procs import Cores
from bench.report import Figure, Outcome, overridden
from bench.smtp_load import MESSAGE_BYTES
from bench.smtp_postfix import postfix_version
from bench.smtp_rounds import FULL, QUICK, RUNNERS, ServerRun, run_latency_phase

TITLE = "smtp — SMTP accept, 5 KB, 20 sessions, 250 after the durable commit"
SERVERS = ("helpline", "postfix", "aiosmtpd")
LABELS = {
    "helpline": "helpline (raw mail committed before 250)",
    "postfix": "Postfix into its hold queue",
    "aiosmtpd": "aiosmtpd doing nothing",
}
LATENCY_GOAL_MS = 20.0
SERVER_BUSY = 0.9  # a server core below this share was not the bottleneck


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
    lines += ["", *normalization_table(by_server(runs, "helpline"))]
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


def normalized(run: ServerRun) -> tuple[int, float]:
    """(mails of the measured run normalized into the stream by its end, per second of it)."""
    count = run.details.get("normalized_by_end_of_measured_run", 0)
    rate = run.details.get("normalized_per_second_during_measured_run", 0.0)
    return int(str(count)), float(str(rate))


def normalization_table(runs: Sequence[ServerRun]) -> list[str]:
    """helpline's accept rate beside how much of that mail reached the stream by the end of
    the run: the accept figure is honest only while normalization keeps up with it."""
    lines = [
        "| helpline, measured run | accepted msg/s (250) | normalized into the stream by the "
        "end of the run | normalized msg/s during the run "
        "| still pending at the end, then drained in |",
        "|---|---|---|---|---|",
    ]
    for r in runs:
        count, rate = normalized(r)
        lines.append(
            f"| round {r.round} | {r.load.rate:,.0f} | {count:,} of {r.load.messages:,} "
            f"({count / r.load.messages:.1%}) | {rate:,.0f} "
            f"| {r.details['pending_at_end_of_measured_run']:,}, "
            f"{r.details['drain_seconds_after_measured_run']} s |"
        )
    if runs:
        shares = [normalized(r)[0] / r.load.messages for r in runs]
        lines.append(
            f"| median | {_med([r.load.rate for r in runs]):,.0f} | {_med(shares):.1%} "
            f"| {_med([normalized(r)[1] for r in runs]):,.0f} | |"
        )
    return lines


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
                count, rate = normalized(done)
                extra = (
                    f", {count:,} normalized by the end ({rate:,.0f} msg/s), "
                    f"{done.details['pending_at_end_of_measured_run']} pending at the end, "
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
        "run); beside its accept rate, how many of the run's messages were normalized into the "
        "stream (raw mail done, its event committed) when smtp-source finished, and that count "
        "per second of the run. "
        f"Latency: a fresh daemon, {plan.sessions} open sessions of bench/smtp_latency.py "
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
