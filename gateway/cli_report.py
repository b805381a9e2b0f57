"""How `helpline report first-response` prints: a table a person reads, or CSV for a sheet.

Apart from the command line's wiring (gateway/cli.py) because it is the one
part with rules of its own: which fields, in which order, and how a latency is
written so that a person reads it at a glance.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

CSV_FIELDS = (
    "channel",
    "target",
    "calendar",
    "count",
    "p50",
    "p90",
    "p99",
    "mean",
    "within_target",
    "breaches",
    "stages.customer_to_accepted.p50",
    "stages.customer_to_accepted.p90",
    "stages.customer_to_accepted.mean",
    "stages.accepted_to_reply.p50",
    "stages.accepted_to_reply.p90",
    "stages.accepted_to_reply.mean",
    "waiting.count",
    "waiting.oldest.age",  # the longest wait: the first of `waiting.oldest`
)


def _dotted(figures: dict[str, Any], field: str) -> Any:
    value: Any = figures
    for part in field.split("."):
        if isinstance(value, list):
            value = value[0] if value else None
        if value is None:
            return None
        value = value[part]
    return value


def report_csv(report: dict[str, Any]) -> str:
    """A header line and one row per channel; an empty cell for null."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for channel, figures in report["channels"].items():
        row = [_dotted({"channel": channel, **figures}, field) for field in CSV_FIELDS]
        writer.writerow(["" if value is None else value for value in row])
    return out.getvalue()


def human_seconds(seconds: float | None) -> str:
    """A latency as a person reads it: "850ms", "12s", "2m05s", "1h02m", "3d04h"; "-" for none."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.1f}".removesuffix(".0") + "s"
    whole = round(seconds)
    if whole >= 86400:
        return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"
    if whole >= 3600:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 60}m{whole % 60:02d}s"


# The table's columns and their widths; the first is left-aligned, the others right.
TABLE_COLUMNS = (
    ("channel", 8),
    ("target", 7),
    ("count", 7),
    ("p50", 7),
    ("p90", 7),
    ("p99", 7),
    ("mean", 7),
    ("within", 7),
    ("breaches", 8),
    ("waiting", 7),
    ("oldest wait", 11),
)


def _table_line(cells: Sequence[str]) -> str:
    return "  ".join(
        f"{cell:<{width}}" if i == 0 else f"{cell:>{width}}"
        for i, (cell, (_, width)) in enumerate(zip(cells, TABLE_COLUMNS, strict=True))
    ).rstrip()


def report_table(report: dict[str, Any]) -> str:
    """A fixed-width table, one row per channel: latencies as people read them, the share
    within target as a percentage, the longest wait."""
    time = "business hours where a channel counts them" if report["business_hours"] else "real time"
    lines = [
        f"First response from {report['since']} to {report['until']}, in {time}",
        "",
        _table_line([name for name, _ in TABLE_COLUMNS]),
    ]
    for channel, f in report["channels"].items():
        within = f["within_target"]
        oldest = f["waiting"]["oldest"]
        cells = (
            channel,
            human_seconds(f["target"]),
            str(f["count"]),
            human_seconds(f["p50"]),
            human_seconds(f["p90"]),
            human_seconds(f["p99"]),
            human_seconds(f["mean"]),
            "-" if within is None else f"{within * 100:.1f}%",
            str(f["breaches"]),
            str(f["waiting"]["count"]),
            human_seconds(oldest[0]["age"] if oldest else None),
        )
        lines.append(_table_line(cells))
    return "\n".join(lines) + "\n"
