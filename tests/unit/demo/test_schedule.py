"""The demo's load pattern: rising, a burst, falling, as a plan of calls."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from hack.demo import schedule
from hack.demo.schedule import LoadPattern, Phase, PlannedCall

SMALL = LoadPattern(
    rising_calls=3,
    rise_every_s=10,
    burst_calls=2,
    burst_at_s=30,
    burst_hold_s=10,
    fall_from_s=50,
    fall_every_s=5,
)


def test_rising_calls_come_one_by_one_then_the_burst_at_once() -> None:
    plan = schedule.build_schedule(SMALL)
    assert [(c.at_s, c.phase) for c in plan] == [
        (0, Phase.RISING),
        (10, Phase.RISING),
        (20, Phase.RISING),
        (30, Phase.BURST),
        (30, Phase.BURST),
    ]


def test_rising_calls_end_one_by_one_in_the_order_they_came_after_the_burst() -> None:
    plan = schedule.build_schedule(SMALL)
    rising_ends = [c.end_s for c in plan if c.phase is Phase.RISING]
    burst_ends = {c.end_s for c in plan if c.phase is Phase.BURST}
    assert rising_ends == [50, 55, 60]
    assert burst_ends == {40}


def test_active_calls_rise_peak_in_the_burst_and_fall_to_zero() -> None:
    plan = schedule.build_schedule(SMALL)
    counts = [schedule.active_at(plan, t) for t in (0, 10, 20, 30, 40, 50, 55, 60)]
    assert counts == [1, 2, 3, 5, 3, 2, 1, 0]
    assert schedule.peak(plan) == 5
    assert schedule.last_end_s(plan) == 60


def test_calls_with_the_same_start_and_hold_are_one_wave() -> None:
    waves = schedule.waves(schedule.build_schedule(SMALL))
    assert [(w.at_s, w.count, w.phase) for w in waves] == [
        (0, 1, Phase.RISING),
        (10, 1, Phase.RISING),
        (20, 1, Phase.RISING),
        (30, 2, Phase.BURST),
    ]


@pytest.mark.parametrize(
    ("t", "phase"),
    [
        (0, Phase.RISING),
        (29.9, Phase.RISING),
        (30, Phase.BURST),
        (39.9, Phase.BURST),
        (40, Phase.FALLING),
        (59.9, Phase.FALLING),
        (60, Phase.SCALING_DOWN),
        (600, Phase.SCALING_DOWN),
    ],
    ids=lambda value: str(value),
)
def test_phase_at_follows_the_burst_and_the_last_end(t: float, phase: Phase) -> None:
    assert schedule.phase_at(schedule.build_schedule(SMALL), t) is phase


def test_plan_steps_give_the_count_from_each_change_on() -> None:
    plan = (
        PlannedCall(at_s=0, hold_s=10, phase=Phase.RISING),
        PlannedCall(at_s=5, hold_s=10, phase=Phase.BURST),
    )
    assert schedule.plan_steps(plan) == ((0, 1), (5, 2), (10, 1), (15, 0))


def test_the_default_pattern_peaks_within_four_workers_of_three_calls() -> None:
    plan = schedule.build_schedule(LoadPattern())
    assert schedule.peak(plan) <= 4 * 3
    assert schedule.last_end_s(plan) <= 120, "the demo's load fits its time budget"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"burst_at_s": 20.0}, "burst_at_s"),
        ({"fall_from_s": 35.0}, "fall_from_s"),
        ({"rising_calls": 0}, "rising_calls"),
        ({"fall_every_s": 0.0}, "fall_every_s"),
    ],
    ids=["burst-before-last-rising-call", "fall-before-burst-ends", "no-rising", "zero-spacing"],
)
def test_a_pattern_without_the_shape_is_refused_naming_the_field(
    change: dict[str, Any], field: str
) -> None:
    pattern = dataclasses.replace(SMALL, **change)
    with pytest.raises(ValueError, match=field):
        schedule.build_schedule(pattern)
