"""The demo's picture: calls, load and workers over time, with the phases and scale events.

`draw(data, ...)` writes one PNG with three panels sharing the time axis: calls on the line
(the agent's ledger) against the plan, the fleet's load against its target, and the workers
(stacked by state, with the desired and ready counts). Every panel shades the load's phases and
marks each scale event. It uses matplotlib's object API (a Figure saved by the Agg canvas: no
pyplot, no display, no global state) and reads nothing.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from hack.demo.schedule import Phase
from hack.demo.timeline import STATES, PlotData

PHASE_COLOURS = {
    Phase.RISING: "#e8f1fb",
    Phase.BURST: "#fdebd3",
    Phase.FALLING: "#eaf6e9",
    Phase.SCALING_DOWN: "#f1ecf7",
}
STATE_COLOURS = {
    "available": "#4caf50",
    "full": "#ffb300",
    "starting": "#4fc3f7",
    "draining": "#ab47bc",
    "unknown": "#e53935",
}
UP, DOWN = "#2e7d32", "#8e24aa"


def draw(
    data: PlotData,
    path: Path,
    *,
    title: str,
    phases: tuple[tuple[Phase, float, float], ...],
    target_load: float,
    load_threshold: float,
) -> Path:
    """Write the PNG to `path` and return it."""
    figure = Figure(figsize=(12, 9), layout="constrained")
    calls, load, workers = figure.subplots(3, 1, sharex=True, height_ratios=(3, 2, 3))
    end = max((*data.t, *data.call_t, 1.0))
    for axis in (calls, load, workers):
        _shade(axis, phases, end)
        _mark(axis, data)
        axis.grid(alpha=0.3)
    calls.step(data.plan_t, data.plan, where="post", color="grey", linestyle="--", label="plan")
    calls.step(data.call_t, data.calls, where="post", color="#1565c0", lw=2, label="on the line")
    _label_phases(calls, phases, end)
    calls.set_ylabel("calls")
    calls.set_ylim(0, max((*data.calls, *data.plan, 1)) * 1.25)
    calls.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0))
    for offset, text, up in data.events:
        calls.annotate(
            text, (offset, 0), xytext=(2, 2), textcoords="offset points",
            color=UP if up else DOWN, fontsize=9,
        )  # fmt: skip
    points = [(t, v) for t, v in zip(data.t, data.load, strict=True) if v is not None]
    load.plot([t for t, _ in points], [v for _, v in points], color="#ef6c00", lw=2, label="load")
    load.axhline(target_load, color="#ef6c00", linestyle="--", lw=1, label="target")
    load.axhline(load_threshold, color="#c62828", linestyle=":", lw=1, label="full above")
    load.set_ylim(0, 1.05)
    load.set_ylabel("load (mean of workers)")
    load.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0))
    workers.stackplot(
        data.t,
        *(data.by_state[state] for state in STATES),
        labels=STATES,
        colors=[STATE_COLOURS[state] for state in STATES],
        alpha=0.55,
        step="post",
    )
    workers.step(data.t, data.desired, where="post", color="black", lw=2, label="desired")
    workers.step(data.t, data.ready, where="post", color="#1565c0", lw=1.5, label="ready")
    workers.set_ylabel("workers")
    workers.set_xlabel("seconds since the first call")
    workers.yaxis.get_major_locator().set_params(integer=True)
    workers.legend(
        loc="upper left", bbox_to_anchor=(1.005, 1.0), title="areas: by state\n(the status)"
    )
    workers.set_xlim(min(0.0, *data.t[:1]), end)
    figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def _shade(axis: Axes, phases: tuple[tuple[Phase, float, float], ...], end: float) -> None:
    last = 0.0
    for phase, start, stop in phases:
        axis.axvspan(start, stop, color=PHASE_COLOURS[phase], zorder=0)
        last = max(last, stop)
    axis.axvspan(last, max(last, end), color=PHASE_COLOURS[Phase.SCALING_DOWN], zorder=0)


def _mark(axis: Axes, data: PlotData) -> None:
    for offset, _, up in data.events:
        axis.axvline(offset, color=UP if up else DOWN, linestyle="-.", lw=1, alpha=0.8)


def _label_phases(axis: Axes, phases: tuple[tuple[Phase, float, float], ...], end: float) -> None:
    """Name each phase at the top of the panel."""
    last = max((stop for _, _, stop in phases), default=0.0)
    for phase, start, stop in (*phases, (Phase.SCALING_DOWN, last, max(last, end))):
        if stop - start < end / 12:  # too narrow for its name
            continue
        axis.text(
            (start + stop) / 2, 0.97, str(phase), transform=axis.get_xaxis_transform(),
            ha="center", va="top", fontsize=9, color="#555555",
        )  # fmt: skip
