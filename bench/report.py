"""Results out: the raw JSON under bench/out/, the console table, and bench/RESULTS.md.

RESULTS.md holds one section per benchmark between HTML comment markers, so a
new full run of one benchmark replaces its own section and leaves the others.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import orjson

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    P = TypeVar("P", bound=DataclassInstance)

BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = BENCH_DIR / "out"
RESULTS = BENCH_DIR / "RESULTS.md"
RESULTS_HEAD = """# helpline benchmark results

Recorded by `python -m bench NAME` (full mode only; `--quick` never writes here).
Every speed figure is a ratio against a baseline measured in the same run on the
same machine, over interleaved product/baseline pairs; the median of the per-pair
ratios is the figure, min-max shows the spread. Absolute values are medians too
and only a sanity check. Raw per-run numbers go to bench/out/ (not committed).
"""


def overridden(plan: P, **values: int | None) -> P:
    """`plan` with the values given on the command line; None (not given) keeps the plan's."""
    return replace(plan, **{name: value for name, value in values.items() if value})


@dataclass(frozen=True)
class Figure:
    """One row of the table: per-pair ratios and the bars they are judged by."""

    label: str
    ratios: Sequence[float]
    floor: float | None
    goal: float | None
    higher_is_better: bool
    absolute: str

    @property
    def median(self) -> float:
        return statistics.median(self.ratios)

    def verdict(self) -> str:
        if self.floor is None or self.goal is None:
            return "reported"

        def meets(bar: float) -> bool:
            return self.median >= bar if self.higher_is_better else self.median <= bar

        if meets(self.goal):
            return "meets goal"
        return "meets floor" if meets(self.floor) else "BELOW FLOOR"

    def as_json(self) -> dict[str, object]:
        return {
            "label": self.label,
            "median": round(self.median, 4),
            "min": round(min(self.ratios), 4),
            "max": round(max(self.ratios), 4),
            "per_pair": [round(r, 4) for r in self.ratios],
            "floor": self.floor,
            "goal": self.goal,
            "higher_is_better": self.higher_is_better,
            "verdict": self.verdict(),
            "absolute": self.absolute,
        }


def _bar(value: float | None, higher: bool) -> str:
    if value is None:
        return "—"
    return f"{'≥' if higher else '≤'} {value:g}"


def table(figures: Sequence[Figure]) -> str:
    """The markdown table printed to the console and written into RESULTS.md."""
    lines = [
        "| figure | median ratio | min–max | floor | goal | verdict | absolute values (medians) |",  # noqa: RUF001
        "|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        lines.append(
            f"| {f.label} | {f.median:.3f} | {min(f.ratios):.3f}–{max(f.ratios):.3f} "  # noqa: RUF001
            f"| {_bar(f.floor, f.higher_is_better)} | {_bar(f.goal, f.higher_is_better)} "
            f"| {f.verdict()} | {f.absolute} |"
        )
    return "\n".join(lines)


def write_json(name: str, stamp: str, data: dict[str, object], out_dir: Path = OUT_DIR) -> Path:
    """bench/out/<timestamp>-<name>.json with everything the run measured."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stamp}-{name}.json"
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    return path


def markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"


def update_results(name: str, section: str, path: Path = RESULTS) -> None:
    """Replace the benchmark's section in RESULTS.md, or append it if it has none yet."""
    begin, end = markers(name)
    block = f"{begin}\n{section.strip()}\n{end}\n"
    text = path.read_text(encoding="utf-8") if path.exists() else RESULTS_HEAD
    start = text.find(begin)
    stop = text.find(end, start) if start >= 0 else -1
    if start >= 0 and stop >= 0:
        rest = text[stop + len(end) :].lstrip("\n")
        text = text[:start] + block + ("\n" + rest if rest else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text, encoding="utf-8")


@dataclass
class Outcome:
    """What a benchmark hands back: figures for the table, checks, and what went wrong."""

    title: str
    settings: str
    figures: list[Figure]
    checks: list[str]
    problems: list[str]  # something broke: the run is invalid and the exit status is 1
    warnings: list[str]  # worth a look, but the figures stand
    data: dict[str, object]
    extra: str = ""  # more markdown after the figures table (absolute values, say)


def section(
    outcome: Outcome, *, when: str, machine: str, command: str, notes: Sequence[str]
) -> str:
    """The markdown of one benchmark's RESULTS.md section."""
    parts = [
        f"## {outcome.title}",
        "",
        f"Taken {when}. {outcome.settings}",
        "",
        f"Machine: {machine}.",
        "",
        f"Reproduce (from the repository root): `{command}`",
        "",
        table(outcome.figures),
        "",
        *([outcome.extra, ""] if outcome.extra else []),
        "Checks:",
        "",
        *[f"- {line}" for line in outcome.checks],
    ]
    extra = [*outcome.warnings, *notes]
    if extra:
        parts += ["", "Notes:", "", *[f"- {line}" for line in extra]]
    return "\n".join(parts) + "\n"
