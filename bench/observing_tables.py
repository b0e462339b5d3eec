"""The observing benchmark's tables: the sides next to each other, in text and Markdown.

Pure: it takes each side's figures and rows (`bench.observing_report`) and lays them out, a
column per side (a cell is the measured text, then PASS or FAIL when the row has a target), the
operator's API requests by verb and resource the same way, and each side's figures as JSON for
the results file. It reads no clock and no file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench import observing_report as report


@dataclass(frozen=True, slots=True, kw_only=True)
class SideTable:
    """One side's figures and rows, under the title its column gets."""

    title: str
    figures: report.Figures
    rows: list[report.Row]


def _cell(row: report.Row) -> str:
    verdict = {True: " PASS", False: " FAIL", None: ""}[row.passed]
    return row.text + verdict


def _lines(sides: Sequence[SideTable]) -> list[list[str]]:
    """The header, then one line per metric: its title, target, and each side's cell."""
    lines = [["metric", "target", *(side.title for side in sides)]]
    for i, row in enumerate(sides[0].rows):
        lines.append([row.title, row.target or "-", *(_cell(side.rows[i]) for side in sides)])
    return lines


def render_text(sides: Sequence[SideTable]) -> str:
    """A fixed-width table for the terminal, a column per side."""
    lines = _lines(sides)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in out)


def render_markdown(sides: Sequence[SideTable]) -> str:
    header, *body = _lines(sides)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def render_api_markdown(sides: Sequence[SideTable]) -> str:
    """The operator's API requests in the window by verb and resource, then the watch events
    it received by resource: on each side, the count and the count per sync round; the most
    frequent first."""
    counts: dict[tuple[str, str], list[int]] = {}
    for i, side in enumerate(sides):
        found = [*side.figures.api.items()]
        found += [(("(watch event received)", r), n) for r, n in side.figures.watch_events.items()]
        for key, n in found:
            counts.setdefault(key, [0] * len(sides))[i] = n
    watched = [key for key in counts if key[0] == "(watch event received)"]
    order = sorted(counts.keys() - set(watched), key=lambda k: (-sum(counts[k]), k))
    order += sorted(watched, key=lambda k: (-sum(counts[k]), k))
    titles = " | ".join(f"{side.title}: requests (per round)" for side in sides)
    lines = [f"| verb | resource | {titles} |", "|---|---|" + "---|" * len(sides)]
    for verb, resource in order:
        cells = [
            f"{n} ({report.fmt(report.per_sync(n, side.figures), '{:.2f}')})"
            for n, side in zip(counts[(verb, resource)], sides, strict=True)
        ]
        lines.append(f"| {verb} | {resource} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_json(f: report.Figures, table: Sequence[report.Row]) -> dict[str, object]:
    """The figures and the rows, ready for json.dumps."""
    return {
        "rows": {
            r.key: {
                "title": r.title.strip(),
                "value": r.value,
                "text": r.text,
                "target": r.target or None,
                "passed": r.passed,
                "how": r.how,
            }
            for r in table
        },
        "window_s": f.window_s,
        "cpu_share_by_period": list(f.cpu_share_by_period),
        "rss_mb_samples": list(f.rss_mb),
        "sync_durations_s": list(f.sync_durations_s),
        "worker_requests": f.worker_requests,
        "worker_plain": f.worker_plain,
        "polls": f.polls,
        "polls_held_samples": list(f.polls_held),
        "worker_changes": f.worker_changes,
        "change_decisions": f.change_decisions,
        "worker_connections": f.worker_connections,
        "observation_failures": f.observation_failures,
        "annotation_writes": f.annotation_writes,
        "watch_events": f.watch_events,
        "api_requests": [
            {"verb": verb, "resource": resource, "requests": n}
            for (verb, resource), n in f.api.items()
        ],
    }
