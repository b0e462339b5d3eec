"""The demo's live view: the fleet by worker state, calls, load and progress, as text."""

from __future__ import annotations

import io

from rich.console import Console

from hack.demo import view
from hack.demo.schedule import Phase
from hack.demo.timeline import Sample, ScaleEvent

T0 = 1_800_000_000.0
SAMPLE = Sample(
    t=T0 + 50, desired=4, ready=3, available=1, full=2, draining=0, starting=1, unknown=0,
    load=0.62, calls=9,
)  # fmt: skip
UP = ScaleEvent(
    t=T0 + 23, reason="ScaledUp", message="load 0.62 > target 0.50: 2 -> 3 workers",
    from_replicas=2, to_replicas=3,
)  # fmt: skip


def board(sample: Sample | None = SAMPLE) -> view.Board:
    return view.Board(
        title="make demo", elapsed_s=50, expected_s=130, phase=Phase.BURST, sample=sample,
        planned_now=10, planned_total=10, started=10, ended=1, target_load=0.5,
        load_threshold=0.7, events=(UP,), t0=T0,
    )  # fmt: skip


def text_of(board_: view.Board) -> str:
    out = io.StringIO()
    Console(file=out, width=140, color_system=None).print(view.render(board_))
    return out.getvalue()


def test_the_view_shows_workers_by_state_calls_load_replicas_and_events() -> None:
    text = text_of(board())
    for shown in (
        "burst", "1 available", "2 full", "1 starting", "0 draining", "0 unknown",
        "desired 4   ready 3", "9 on the line (the plan: 10)", "10 of 10 started, 1 ended",
        "0.62", "target 0.50", "+23s ScaledUp load 0.62 > target 0.50: 2 -> 3 workers",
        "0:50 of ~2:10",
    ):  # fmt: skip
        assert shown in text, shown


def test_the_view_before_the_first_reading_still_shows_the_plan() -> None:
    text = text_of(board(sample=None))
    assert "0 on the line (the plan: 10)" in text
    assert "replicas" not in text


def test_the_line_for_a_log_names_the_same_numbers_without_the_clock() -> None:
    assert view.line(board()) == (
        "burst        workers 4 desired, 3 ready (1 available, 2 full, 1 starting, 0 draining, "
        "0 unknown); calls 9 (plan 10); load 0.62"
    )
    assert view.line(board(sample=None)) == "burst: no reading of the fleet yet"
