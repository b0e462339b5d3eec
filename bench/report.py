"""Medians, ratios and targets of a benchmark run, and the table that shows them.

Pure: takes the samples both runtimes produced and returns rows, text and JSON-ready dicts. It
reads no clock and no file, and asserts nothing: a missed target is a `False` in a column.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

OURS = "ours"
OFFICIAL = "livekit-agents"


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """A goal for one metric, as a rule on the two medians."""

    text: str
    """How the goal reads in the table, e.g. `<= 0.20x (5x faster)`."""
    met: Callable[[float, float], bool] = field(repr=False)
    """(ours, livekit-agents) -> whether the goal is met."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Metric:
    """One measured quantity: the samples of both runtimes, in the metric's unit."""

    key: str
    title: str
    unit: str
    ours: Sequence[float]
    official: Sequence[float]
    target: Target | None = None
    how: str = ""
    """One line on how it was measured, for the results file."""
    worst: bool = False
    """Summarize by the minimum instead of the median: one bad round must show."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """A metric reduced to medians, their ratio and the verdict."""

    key: str
    title: str
    unit: str
    ours: float | None
    official: float | None
    ratio: float | None
    """ours / livekit-agents."""
    statistic: str
    """"median", or "min" for a metric summarized by its worst sample."""
    target: str
    passed: bool | None
    """None when the metric has no target or a side has no samples."""
    samples: tuple[int, int]


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def worst(values: Sequence[float]) -> float | None:
    return min(values) if values else None


def summarize(metric: Metric) -> Row:
    """Medians of both sides, their ratio (ours / livekit-agents) and the target's verdict."""
    reduce = worst if metric.worst else median
    ours, official = reduce(metric.ours), reduce(metric.official)
    ratio = ours / official if ours is not None and official else None
    passed = None
    if metric.target is not None and ours is not None and official is not None:
        passed = metric.target.met(ours, official)
    return Row(
        key=metric.key,
        title=metric.title,
        unit=metric.unit,
        ours=ours,
        official=official,
        ratio=ratio,
        target=metric.target.text if metric.target else "",
        passed=passed,
        samples=(len(metric.ours), len(metric.official)),
        statistic="min" if metric.worst else "median",
    )


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    digits = 0 if unit == "jobs" or (unit == "ms" and value >= 100) else 2 if unit == "s" else 1
    return f"{value:.{digits}f} {unit}"


def _cells(row: Row) -> list[str]:
    verdict = {True: "PASS", False: "FAIL", None: "-"}[row.passed]
    return [
        f"{row.title} ({'worst, ' if row.statistic == 'min' else ''}"
        f"n={row.samples[0]}/{row.samples[1]})",
        _number(row.ours, row.unit),
        _number(row.official, row.unit),
        "n/a" if row.ratio is None else f"{row.ratio:.2f}x",
        row.target or "-",
        verdict,
    ]


HEADER = ["metric", OURS, OFFICIAL, "ratio (ours/lk)", "target", "pass"]


def render_text(rows: Sequence[Row]) -> str:
    """A fixed-width table for the terminal."""
    table = [HEADER, *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def render_markdown(rows: Sequence[Row]) -> str:
    """The same table in Markdown."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def to_json(metric: Metric, row: Row) -> dict[str, object]:
    """A metric's samples and summary, ready for json.dumps."""
    return {
        "title": metric.title,
        "unit": metric.unit,
        "how": metric.how,
        "samples": {OURS: list(metric.ours), OFFICIAL: list(metric.official)},
        row.statistic: {OURS: row.ours, OFFICIAL: row.official},
        "ratio_ours_over_official": row.ratio,
        "target": row.target or None,
        "passed": row.passed,
    }
