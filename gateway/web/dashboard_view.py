"""The dashboard's HTML: the first-response report as a page a support lead reads.

Pure functions of the report (gateway.first_response.report's dict), so the
page shows exactly the report's figures, formatted for people: "2 min 5 s",
"87.5%". Everything from the store is escaped; nothing here runs script.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from html import escape
from typing import Any

from gateway.web.svg import Series, human_duration, human_share, legend, line_chart

CHANNEL_LABELS = {
    "email": "Email",
    "webform": "Web form",
    "chat": "Chat",
    "voice": "Phone",
    "api": "API",
}
# One colour and dash per channel, so lines differ without colour too.
CHANNEL_STYLES = {
    "email": ("#1f5fa8", ""),
    "webform": ("#11806a", "8 4"),
    "chat": ("#c2570c", "2 3"),
    "voice": ("#7b3fa0", "10 3 2 3"),
    "api": ("#5a6270", "4 4"),
}
PERCENTILES = (
    ("p50", "median (p50)", "#1f5fa8", ""),
    ("p90", "p90", "#c2570c", "8 4"),
    ("p99", "p99", "#7b3fa0", "2 3"),
)
TARGET_COLOUR, TARGET_DASH = "#b3261e", "6 4"
STAGES = (
    ("customer_to_accepted", "Customer sent → helpline accepted (the pipes)"),
    ("accepted_to_reply", "Accepted → first human answer (the team)"),
)


def channel_label(channel: str) -> str:
    return CHANNEL_LABELS.get(channel, channel)


def _parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


def _clock(moment: str) -> str:
    """An RFC 3339 time as "Nov 23, 09:58 UTC" inside a <time> element."""
    try:
        when = _parse(moment)
    except ValueError:
        return escape(moment)
    shown = f"{when:%b} {when.day}, {when:%H:%M} UTC"
    return f'<time datetime="{escape(moment)}">{shown}</time>'


def report_days(report: Mapping[str, Any]) -> list[date]:
    """Every day of the period (UTC), and any other day the report has figures for."""
    found: set[date] = set()
    try:
        first, last = _parse(report["since"]).date(), _parse(report["until"]).date()
        found.update(first + timedelta(days=i) for i in range((last - first).days + 1))
    except (KeyError, ValueError):
        pass
    for row in report.get("daily", []):
        try:
            found.add(date.fromisoformat(row["date"]))
        except (KeyError, ValueError):
            continue
    return sorted(found)


def shown_channels(report: Mapping[str, Any]) -> list[str]:
    """Channels with anything to show: answers, someone waiting, or a day's figures."""
    daily = {row.get("channel") for row in report.get("daily", [])}
    return [
        name
        for name, ch in report.get("channels", {}).items()
        if ch.get("count") or (ch.get("waiting") or {}).get("count") or name in daily
    ]


def _daily(report: Mapping[str, Any], channel: str, days: Sequence[date], key: str) -> list[Any]:
    by_day = {
        row["date"]: row.get(key) for row in report.get("daily", []) if row["channel"] == channel
    }
    return [by_day.get(day.isoformat()) for day in days]


def _figure(key: str, label: str, value: str, unit_hint: str = "") -> str:
    hint = f' title="{escape(unit_hint)}"' if unit_hint else ""
    return f'<div class="figure"><dt>{label}</dt><dd data-figure="{key}"{hint}>{value}</dd></div>'


def _headline(ch: Mapping[str, Any]) -> str:
    waiting = (ch.get("waiting") or {}).get("count", 0)
    return (
        '<dl class="figures">'
        + _figure("count", "Answered", str(ch.get("count", 0)), "first responses in the period")
        + _figure("within_target", "Within target", human_share(ch.get("within_target")))
        + _figure("p50", "Median (p50)", human_duration(ch.get("p50")))
        + _figure("p90", "p90", human_duration(ch.get("p90")), "9 in 10 answered within")
        + _figure("p99", "p99", human_duration(ch.get("p99")), "99 in 100 answered within")
        + _figure("mean", "Mean", human_duration(ch.get("mean")))
        + _figure("breaches", "Breaches", str(ch.get("breaches", 0)), "targets passed unanswered")
        + _figure("waiting", "Waiting now", str(waiting))
        + "</dl>"
    )


def _percentile_chart(
    report: Mapping[str, Any], channel: str, ch: Mapping[str, Any], days: Sequence[date]
) -> str:
    label = channel_label(channel)
    series = [
        Series(key, name, _daily(report, channel, days, key), colour, dash)
        for key, name, colour, dash in PERCENTILES
    ]
    target = ch.get("target")
    target_text = f"target {human_duration(target)}" if target is not None else ""
    chart = line_chart(
        f"chart-{channel}",
        f"{label}: first-response percentiles by day",
        f"Median, p90 and p99 first-response time per day from {days[0]} to {days[-1]}, "
        f"log scale, against the {target_text or 'channel'}.",
        days,
        series,
        reference=target,
        reference_label=target_text,
    )
    extra = [(target_text, TARGET_COLOUR, TARGET_DASH)] if target_text else []
    key = legend(series, extra)
    return f'<figure class="chart-box">{chart}<figcaption>{key}</figcaption></figure>'


def _daily_table(report: Mapping[str, Any], channel: str) -> str:
    rows = sorted(
        (r for r in report.get("daily", []) if r["channel"] == channel), key=lambda r: r["date"]
    )
    if not rows:
        return ""
    body = "".join(
        f"<tr><th scope=row>{escape(r['date'])}</th><td>{r.get('count', 0)}</td>"
        f"<td>{human_duration(r.get('p50'))}</td><td>{human_duration(r.get('p90'))}</td>"
        f"<td>{human_duration(r.get('p99'))}</td><td>{human_share(r.get('within_target'))}</td></tr>"
        for r in rows
    )
    return (
        f'<details id="days-{escape(channel)}"><summary>Figures by day</summary>'
        '<table class="days"><thead><tr><th scope=col>Day (UTC)</th><th scope=col>Answered</th>'
        "<th scope=col>Median</th><th scope=col>p90</th><th scope=col>p99</th>"
        f"<th scope=col>Within target</th></tr></thead><tbody>{body}</tbody></table></details>"
    )


def _stage_row(key: str, label: str, stage: Mapping[str, Any] | None) -> str:
    if stage:
        cells = "".join(f"<td>{human_duration(stage.get(k))}</td>" for k in ("p50", "p90", "mean"))
    else:
        cells = '<td colspan="3">no figures</td>'
    return f'<tr data-stage="{escape(key)}"><th scope=row>{escape(label)}</th>{cells}</tr>'


def _stages(ch: Mapping[str, Any]) -> str:
    stages = ch.get("stages") or {}
    rows = [_stage_row(STAGES[0][0], STAGES[0][1], stages.get(STAGES[0][0]))]
    for backend, stage in sorted((stages.get("accepted_to_backend") or {}).items()):
        label = f"Accepted → in {backend} (delivery)"
        rows.append(_stage_row(f"accepted_to_backend.{backend}", label, stage))
    rows.append(_stage_row(STAGES[1][0], STAGES[1][1], stages.get(STAGES[1][0])))
    return (
        "<h3>Where the time goes</h3>"
        '<table class="stages"><thead><tr><th scope=col>Stage</th><th scope=col>Median</th>'
        f"<th scope=col>p90</th><th scope=col>Mean</th></tr></thead><tbody>{''.join(rows)}"
        "</tbody></table>"
    )


def _waiting(ch: Mapping[str, Any], ticket_token: str) -> str:
    waiting = ch.get("waiting") or {}
    oldest = waiting.get("oldest") or []
    count = waiting.get("count", 0)
    if not count:
        return '<h3>Waiting longest</h3><p class="none">No one is waiting for a first answer.</p>'
    more = f" The {len(oldest)} longest are listed." if count > len(oldest) else ""
    rows = []
    for item in oldest:
        number = item.get("conversation_number")
        conversation = ticket_token.replace("{number}", str(number)) if number else ""
        breached = bool(item.get("breached"))
        state = (
            '<td class="breached">Past target</td>'
            if breached
            else '<td class="ok">Within target</td>'
        )
        rows.append(
            f'<tr data-conversation="{escape(str(item.get("conversation_id", "")))}">'
            f'<th scope=row class="name">{escape(item.get("name") or "(no name)")}</th>'
            f"<td>{escape(conversation)}</td>"
            f'<td class="age">{human_duration(item.get("age"))}</td>'
            f"<td>{_clock(item.get('started_at', ''))}</td>{state}</tr>"
        )
    return (
        f"<h3>Waiting longest</h3><p>{count} waiting for a first answer.{more}</p>"
        '<table class="waiting"><thead><tr><th scope=col>Customer</th>'
        "<th scope=col>Conversation</th><th scope=col>Waiting for</th><th scope=col>Since</th>"
        f"<th scope=col>Target</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _channel(
    report: Mapping[str, Any], channel: str, days: Sequence[date], ticket_token: str
) -> str:
    ch = report["channels"][channel]
    target = ch.get("target")
    measured = "real time"
    if ch.get("calendar"):
        measured = f"business hours ({escape(ch['calendar'])})"
    return (
        f'<section class="channel" id="channel-{escape(channel)}" '
        f'aria-labelledby="h-{escape(channel)}" data-channel="{escape(channel)}">'
        f'<h2 id="h-{escape(channel)}">{escape(channel_label(channel))}</h2>'
        f'<p class="target">Target: first answer within <strong>{human_duration(target)}</strong>'
        f", counted in {measured}.</p>"
        + _headline(ch)
        + _percentile_chart(report, channel, ch, days)
        + _daily_table(report, channel)
        + _stages(ch)
        + _waiting(ch, ticket_token)
        + "</section>"
    )


def _overview(report: Mapping[str, Any], channels: Sequence[str], days: Sequence[date]) -> str:
    series = [
        Series(
            ch,
            channel_label(ch),
            _daily(report, ch, days, "within_target"),
            *CHANNEL_STYLES.get(ch, ("#333", "")),
        )
        for ch in channels
    ]
    chart = line_chart(
        "chart-overview",
        "Share answered within target by day, per channel",
        f"One line per channel: the share of first responses within the channel's target, "
        f"per day from {days[0]} to {days[-1]}.",
        days,
        series,
        seconds=False,
    )
    return (
        '<section class="overview" aria-labelledby="h-overview">'
        '<h2 id="h-overview">Within target, by day</h2>'
        f'<figure class="chart-box">{chart}<figcaption>{legend(series)}</figcaption></figure>'
        "</section>"
    )


def figures(report: Mapping[str, Any], ticket_token: str) -> str:
    """The part of the page the refresh replaces: everything computed from the report."""
    days = report_days(report)
    channels = shown_channels(report)
    hours = (
        " Channels with a calendar are measured in business hours."
        if report.get("business_hours")
        else ""
    )
    head = (
        f'<p class="period">From {_clock(report["since"])} to {_clock(report["until"])}.{hours}</p>'
    )
    if not channels or not days:
        body = '<p class="none">No first responses and no one waiting in this period.</p>'
    else:
        body = _overview(report, channels, days) + "".join(
            _channel(report, ch, days, ticket_token) for ch in channels
        )
        quiet = [channel_label(c) for c in report.get("channels", {}) if c not in channels]
        if quiet:
            body += f'<p class="quiet">Nothing in this period on: {escape(", ".join(quiet))}.</p>'
    return f'<div id="figures">{head}{body}</div>'
