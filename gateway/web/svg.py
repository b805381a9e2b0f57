"""Line charts as server-side SVG, drawn by our own code (no third-party script).

A chart is days along x and one line per series; seconds are drawn on a log
scale (a chat answered in 5 s and a mail in 2 h on one chart stay readable),
shares on a linear 0-100 % scale. Every point carries a <title> so a pointer
or a screen reader finds its value; the page shows the same figures as a table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from html import escape

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 36, 14, 34
MIN_TICK_GAP = 18  # pixels between two y-axis labels
# Nice tick values for seconds: 1 s to a week.
SECOND_TICKS: tuple[float, ...] = (
    *(0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30),
    *(60, 120, 180, 300, 600, 900, 1800, 3600, 7200, 4 * 3600, 8 * 3600),
    *(86400, 2 * 86400, 7 * 86400),
)
NO_FIGURE = "\N{EN DASH}"  # what a table shows for a figure the report has none of
MAX_Y_TICKS = 6
MAX_X_LABELS = 8


@dataclass(frozen=True, slots=True)
class Series:
    key: str  # stable name for tests and styles: "p90", "email"
    label: str  # what the legend says
    values: Sequence[float | None]  # one per day; None: no figure that day
    colour: str
    dash: str = ""  # an SVG stroke-dasharray, so lines differ without colour too


def human_duration(seconds: float | None) -> str:
    """A duration as a person reads it: "850 ms", "4.2 s", "2 min 5 s", "3 h 10 min"."""
    if seconds is None:
        return NO_FIGURE
    if seconds < 1:
        return f"{round(seconds * 1000)} ms" if seconds > 0 else "0 s"
    if seconds < 10:
        return f"{seconds:.1f}".removesuffix(".0") + " s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    for big, big_unit, small, small_unit in (
        (86400, "d", 3600, "h"),
        (3600, "h", 60, "min"),
        (60, "min", 1, "s"),
    ):
        if whole >= big:
            count, rest = divmod(whole, big)
            part = rest // small
            return f"{count} {big_unit}" + (f" {part} {small_unit}" if part else "")
    return f"{whole} s"  # pragma: no cover - every whole >= 60 matched above


def human_share(share: float | None) -> str:
    """A share 0..1 as a percentage: "87.5%", "100%"."""
    if share is None:
        return NO_FIGURE
    return f"{share * 100:.1f}".removesuffix(".0") + "%"


class _Scale:
    def __init__(self, lo: float, hi: float, log: bool) -> None:
        self.log = log
        self.lo, self.hi = (math.log10(lo), math.log10(hi)) if log else (lo, hi)

    def y(self, value: float) -> float:
        v = math.log10(max(value, 10**self.lo)) if self.log else value
        frac = (v - self.lo) / (self.hi - self.lo) if self.hi > self.lo else 0.5
        return TOP + (1 - min(max(frac, 0.0), 1.0)) * (HEIGHT - TOP - BOTTOM)


def _seconds_domain(values: list[float], reference: float | None) -> tuple[float, float]:
    known = [v for v in values if v > 0] + ([reference] if reference else [])
    if not known:
        return 1.0, 60.0
    lo, hi = min(known) / 1.6, max(known) * 1.6
    lo = max(lo, 0.1)
    if hi / lo < 10:  # at least one decade, centred on what there is
        middle = math.sqrt(lo * hi)
        lo, hi = max(middle / math.sqrt(10), 0.1), middle * math.sqrt(10)
    return lo, hi


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    if not log:
        return [0.0, 0.25, 0.5, 0.75, 1.0]
    inside = [t for t in SECOND_TICKS if lo <= t <= hi]
    while len(inside) > MAX_Y_TICKS:
        inside = inside[::2]
    return inside


def _x(index: int, count: int) -> float:
    span = WIDTH - LEFT - RIGHT
    return LEFT + span / 2 if count == 1 else LEFT + span * index / (count - 1)


def _day_label(day: date) -> str:
    return day.strftime("%b %d").replace(" 0", " ")


def _series_svg(
    series: Series, days: Sequence[date], scale: _Scale, fmt: Callable[[float], str]
) -> str:
    runs: list[list[tuple[float, float]]] = [[]]
    dots = []
    for i, value in enumerate(series.values):
        if value is None:
            runs.append([])
            continue
        x, y = _x(i, len(days)), scale.y(value)
        runs[-1].append((x, y))
        tip = escape(f"{series.label}, {days[i].isoformat()}: {fmt(value)}")
        dots.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{series.colour}">'
            f"<title>{tip}</title></circle>"
        )
    paths = []
    for run in runs:
        if len(run) > 1:
            d = "M" + " L".join(f"{x:.1f} {y:.1f}" for x, y in run)
            dash = f' stroke-dasharray="{series.dash}"' if series.dash else ""
            paths.append(
                f'<path d="{d}" fill="none" stroke="{series.colour}" stroke-width="2"{dash}/>'
            )
    return f'<g class="series" data-series="{escape(series.key)}">' + "".join(paths + dots) + "</g>"


def line_chart(
    chart_id: str,
    title: str,
    description: str,
    days: Sequence[date],
    series: Sequence[Series],
    *,
    seconds: bool = True,
    reference: float | None = None,
    reference_label: str = "",
) -> str:
    """One chart: `seconds` on a log scale with an optional reference (the target), else shares."""
    values = [v for s in series for v in s.values if v is not None]
    fmt: Callable[[float], str] = human_duration if seconds else human_share
    if seconds:
        lo, hi = _seconds_domain(values, reference)
    else:
        lo, hi = 0.0, 1.0
    scale = _Scale(lo, hi, log=seconds)
    parts = [
        f'<svg class="chart" id="{chart_id}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{chart_id}-t {chart_id}-d" font-size="12" '
        f'font-family="system-ui, sans-serif">',
        f'<title id="{chart_id}-t">{escape(title)}</title>',
        f'<desc id="{chart_id}-d">{escape(description)}</desc>',
    ]
    last_y = math.inf
    for tick in _ticks(lo, hi, seconds):
        y = scale.y(tick)
        if last_y - y < MIN_TICK_GAP:
            continue
        last_y = y
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d0d4da"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#444">'
            f"{escape(fmt(tick))}</text>"
        )
    step = max(1, math.ceil(len(days) / MAX_X_LABELS))
    for i, day in enumerate(days):
        if i % step == 0 or i == len(days) - 1:
            parts.append(
                f'<text x="{_x(i, len(days)):.1f}" y="{HEIGHT - 12}" text-anchor="middle" '
                f'fill="#444">{escape(_day_label(day))}</text>'
            )
    if reference is not None:
        y = scale.y(reference)
        parts.append(
            f'<g class="reference"><line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" '
            f'y2="{y:.1f}" stroke="#b3261e" stroke-width="1.5" stroke-dasharray="6 4"/>'
            f'<text x="{WIDTH - RIGHT}" y="{y - 5:.1f}" text-anchor="end" fill="#b3261e">'
            f"{escape(reference_label)}</text></g>"
        )
    parts.extend(_series_svg(s, days, scale, fmt) for s in series)
    if not values:
        parts.append(
            f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT / 2}" text-anchor="middle" '
            'fill="#444">no figures in this period</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def legend(series: Sequence[Series], extra: Sequence[tuple[str, str, str]] = ()) -> str:
    """The key of a chart as an HTML list: a small line of each series' colour and dash."""
    items = [(s.label, s.colour, s.dash) for s in series] + list(extra)
    return (
        '<ul class="legend">'
        + "".join(
            f'<li><svg width="28" height="10" aria-hidden="true"><line x1="1" x2="27" y1="5" '
            f'y2="5" stroke="{colour}" stroke-width="2.5"'
            + (f' stroke-dasharray="{dash}"' if dash else "")
            + f"/></svg>{escape(label)}</li>"
            for label, colour, dash in items
        )
        + "</ul>"
    )
