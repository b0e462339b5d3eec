"""The demo's live terminal view: the fleet by worker state, calls, load, replicas, progress.

`render(board)` turns a `Board` (what to show right now) into a rich renderable, and
`line(board)` into one line of text for a terminal that is not interactive (a log file, CI).
Both are pure; the caller prints.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from hack.demo.schedule import Phase
from hack.demo.timeline import STATES, Sample, ScaleEvent

STATE_STYLES = {
    "available": "green",
    "full": "yellow",
    "starting": "cyan",
    "draining": "magenta",
    "unknown": "red",
}
EVENTS_SHOWN = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class Board:
    """Everything the view shows at one moment."""

    title: str
    elapsed_s: float
    """Since the load started."""
    expected_s: float
    """How long the load and the scale-down should take: the progress bar's length."""
    phase: Phase
    sample: Sample | None
    """The latest reading of the fleet (None before the first)."""
    planned_now: int
    """Calls the plan has on the line now."""
    planned_total: int
    started: int
    """Calls the agent has started so far (its ledger)."""
    ended: int
    target_load: float
    load_threshold: float
    events: tuple[ScaleEvent, ...]
    t0: float
    """Unix time the load started (events are shown as offsets from it)."""


def _workers(sample: Sample) -> Text:
    text = Text()
    for state in STATES:
        count = int(getattr(sample, state))
        style = STATE_STYLES[state]
        text.append("■" * count, style=style)
        text.append(f" {count} {state}   ", style=style if count else "dim")
    return text


def _load(board: Board, sample: Sample) -> RenderableType:
    grid = Table.grid(padding=(0, 1))
    grid.add_row(
        ProgressBar(
            total=1.0,
            completed=sample.load or 0.0,
            width=30,
            complete_style="yellow" if (sample.load or 0.0) > board.target_load else "green",
        ),
        Text(
            f"{'n/a' if sample.load is None else f'{sample.load:.2f}'}   target "
            f"{board.target_load:.2f}, a worker is full above {board.load_threshold:.2f}"
        ),
    )
    return grid


def _progress(board: Board) -> RenderableType:
    grid = Table.grid(padding=(0, 1))
    done = min(board.elapsed_s, board.expected_s)
    grid.add_row(
        ProgressBar(total=board.expected_s, completed=done, width=46),
        Text(f"{_clock(board.elapsed_s)} of ~{_clock(board.expected_s)}"),
    )
    return grid


def _clock(seconds: float) -> str:
    whole = max(0, int(seconds))
    return f"{whole // 60}:{whole % 60:02d}"


def _events(board: Board) -> Text:
    if not board.events:
        return Text("none yet", style="dim")
    text = Text()
    for index, event in enumerate(board.events[-EVENTS_SHOWN:]):
        if index:
            text.append("\n")
        text.append(f"+{event.t - board.t0:.0f}s ", style="dim")
        text.append(f"{event.reason} ", style="green" if event.up else "magenta")
        text.append(event.message)
    return text


def render(board: Board) -> RenderableType:
    """The whole view."""
    table = Table.grid(padding=(0, 2))
    table.add_column(justify="right", style="bold")
    table.add_column()
    table.add_row("load pattern", Text(str(board.phase), style="bold cyan"))
    table.add_row("progress", _progress(board))
    sample = board.sample
    if sample is not None:
        table.add_row("workers", _workers(sample))
        table.add_row("replicas", f"desired {sample.desired}   ready {sample.ready}")
    on_line = sample.calls if sample is not None else 0
    table.add_row(
        "calls",
        f"{on_line} on the line (the plan: {board.planned_now})   {board.started} of "
        f"{board.planned_total} started, {board.ended} ended",
    )
    if sample is not None:
        table.add_row("load", _load(board, sample))
    table.add_row("scale events", _events(board))
    return Panel(Group(table), title=board.title, title_align="left")


def line(board: Board) -> str:
    """The view as one line (without the clock, so that equal lines mean no change)."""
    sample = board.sample
    if sample is None:
        return f"{board.phase}: no reading of the fleet yet"
    states = ", ".join(f"{int(getattr(sample, s))} {s}" for s in STATES)
    load = "n/a" if sample.load is None else f"{sample.load:.2f}"
    return (
        f"{board.phase:<12} workers {sample.desired} desired, {sample.ready} ready ({states}); "
        f"calls {sample.calls} (plan {board.planned_now}); load {load}"
    )
