"""The observing benchmark's tables: the sides next to each other, in text and Markdown.

Pure: it takes each side's figures (`bench.observing_report`) and rows (`bench.observing_rows`)
and lays them out, a column per side (a cell is the measured text, then PASS or FAIL when the
row has a target), the operators' API requests by verb and resource the same way, each later
side's ratios to the first, and each side's figures as JSON for the results file. It reads no
clock and no file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench import observing_report as report
from bench import observing_rows
from bench.observing_layout import Role


@dataclass(frozen=True, slots=True, kw_only=True)
class SideTable:
    """One side's figures and rows, under the title its column gets."""

    title: str
    figures: report.Figures
    rows: list[observing_rows.Row]
    roles: tuple[Role, ...]
    """What each of the side's operator processes handled, in the figures' order."""


def _cell(row: observing_rows.Row) -> str:
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
            f"{n} ({observing_rows.fmt(observing_rows.per_round(n, side.figures), '{:.2f}')})"
            for n, side in zip(counts[(verb, resource)], sides, strict=True)
        ]
        lines.append(f"| {verb} | {resource} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


RATIOS = (
    ("cpu_share", "CPU of the busiest process"),
    ("cpu_share_sum", "CPU of every process together"),
    ("rss_peak_mb", "RSS peak of a process"),
    ("sync_duration_s", "sync round duration, median"),
)
"""The rows whose value each later side is compared with the first side's."""


def render_ratios(sides: Sequence[SideTable]) -> list[str]:
    """Each later side's value over the first side's, for the rows of `RATIOS`, one line per
    side ("n/a" where a value is missing or zero)."""
    first = {row.key: row.value for row in sides[0].rows}
    lines = []
    for side in sides[1:]:
        mine = {row.key: row.value for row in side.rows}
        cells = []
        for key, what in RATIOS:
            base, value = first.get(key), mine.get(key)
            ratio = value / base if base and value is not None else None
            cells.append(f"{what} {observing_rows.fmt(ratio, '{:.2f}')}x")
        lines.append(f"`{side.title}` against `{sides[0].title}`: " + "; ".join(cells) + ".")
    return lines


def _process_json(role: Role, p: report.ProcessFigures) -> dict[str, object]:
    return {
        "shard": role.shard,
        "shards": role.shards,
        "agentworkers": list(role.agentworkers),
        "workers": role.workers,
        "cpu_share": p.cpu_share,
        "cpu_share_by_period": list(p.cpu_share_by_period),
        "reported_cpu_share": p.reported_cpu_share,
        "rss_mb_samples": list(p.rss_mb),
        "open_files_samples": list(p.fds),
        "syncs": p.syncs,
        "sync_durations_s": list(p.sync_durations_s),
        "observations": p.observations,
        "observation_s": p.observation_s,
        "change_decisions": p.change_decisions,
        "change_decision_s": p.change_decision_s,
        "annotation_writes": p.annotation_writes,
        "observation_failures": p.observation_failures,
    }


def to_json(side: SideTable) -> dict[str, object]:
    """A side's rows, each process's figures and what the processes share, for json.dumps."""
    f = side.figures
    return {
        "title": side.title,
        "rows": {
            r.key: {
                "title": r.title.strip(),
                "value": r.value,
                "text": r.text,
                "target": r.target or None,
                "passed": r.passed,
                "how": r.how,
            }
            for r in side.rows
        },
        "window_s": f.window_s,
        "processes": [
            _process_json(role, p) for role, p in zip(side.roles, f.processes, strict=True)
        ],
        "worker_requests": f.worker_requests,
        "worker_plain": f.worker_plain,
        "polls": f.polls,
        "polls_held_samples": list(f.polls_held),
        "worker_changes": f.worker_changes,
        "worker_connections": f.worker_connections,
        "fake_workers_open_files_samples": list(f.fake_workers_fds),
        "watch_events": f.watch_events,
        "api_requests": [
            {"verb": verb, "resource": resource, "requests": n}
            for (verb, resource), n in f.api.items()
        ],
    }
