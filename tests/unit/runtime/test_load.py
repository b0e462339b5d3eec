"""The load window and the FULL rule, with the jobs a measurement has not seen yet."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker_runtime.load import (
    LoadWindow,
    Occupancy,
    awaits_first_measurement,
    clamp_load,
    is_full,
)

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most


def test_empty_window_reads_zero() -> None:
    assert LoadWindow().average(now_s=100.0) == 0.0


def test_average_of_samples_in_the_window() -> None:
    window = LoadWindow(window_s=5.0)
    for t, v in [(0.0, 0.2), (1.0, 0.4), (2.0, 0.6)]:
        window.add(t, v)
    assert window.average(2.0) == pytest.approx(0.4)


def test_samples_older_than_the_window_are_forgotten() -> None:
    window = LoadWindow(window_s=5.0)
    window.add(0.0, 1.0)
    window.add(4.0, 0.0)
    assert window.average(4.9) == pytest.approx(0.5)
    assert window.average(5.0) == pytest.approx(0.0)
    assert len(window) == 1


def test_default_window_is_five_seconds() -> None:
    assert LoadWindow().window_s == 5.0


def test_samples_are_clamped_and_nan_ignored() -> None:
    window = LoadWindow()
    window.add(0.0, 1.7)
    window.add(0.1, -0.5)
    window.add(0.2, math.nan)
    assert window.average(0.2) == pytest.approx(0.5)


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window_s"):
        LoadWindow(window_s=0)


@pytest.mark.parametrize(
    ("load", "threshold", "full"),
    [(0.69, 0.7, False), (0.7, 0.7, False), (0.71, 0.7, True), (1.0, math.inf, False)],
    ids=["below", "at-threshold-still-accepts", "above", "threshold-disabled"],
)
def test_full_only_above_the_threshold(load: float, threshold: float, full: bool) -> None:
    idle = Occupancy(load=load, measured_jobs=0, held_jobs=0)
    assert is_full(idle, threshold=threshold) is full


@pytest.mark.parametrize(
    ("load", "measured", "held", "full"),
    [
        (0.5, 1, 1, False),
        (0.5, 1, 2, True),
        (0.25, 1, 3, False),
        (0.25, 1, 4, True),
        (0.0, 1, 5, False),
        (0.5, 2, 0, False),
        (0.8, 1, 1, True),
        (0.0, 0, 3, False),
    ],
    ids=[
        "measured-job-leaves-room-for-one",
        "one-unmeasured-job-at-the-measured-cost-overflows",
        "projected-to-the-threshold-still-accepts",
        "projected-above-the-threshold",
        "jobs-measured-at-no-load-cost-nothing",
        "jobs-ended-since-the-measurement",
        "measured-load-above-the-threshold",
        "no-measured-job-no-guess",
    ],
)
def test_jobs_the_load_has_not_seen_count_at_the_measured_cost(
    load: float, measured: int, held: int, full: bool
) -> None:
    occupancy = Occupancy(load=load, measured_jobs=measured, held_jobs=held)
    assert is_full(occupancy, threshold=0.75) is full


@pytest.mark.parametrize(
    ("measured", "held", "prewarmed", "waited", "awaits"),
    [
        (0, 0, 3, False, False),
        (0, 1, 3, False, True),
        (1, 1, 3, False, False),
        (1, 4, 3, False, False),
        (0, 2, 3, True, False),
        (0, 3, 3, True, True),
        (0, 1, 0, True, True),
    ],
    ids=[
        "nothing-held-takes-the-first",
        "one-unmeasured-job-the-next-waits",
        "a-measured-job-answers-at-once",
        "measured-cost-decides-not-this-rule",
        "waited-in-vain-guesses-prewarmed-at-once",
        "waited-in-vain-guess-used-up",
        "no-prewarmed-process-guesses-one",
    ],
)
def test_before_a_job_was_measured_offers_wait_for_the_reading(
    measured: int, held: int, prewarmed: int, waited: bool, awaits: bool
) -> None:
    occupancy = Occupancy(load=0.0, measured_jobs=measured, held_jobs=held)
    found = awaits_first_measurement(occupancy, threshold=0.75, prewarmed=prewarmed, waited=waited)
    assert found is awaits


def test_a_disabled_threshold_takes_any_burst() -> None:
    burst = Occupancy(load=1.0, measured_jobs=0, held_jobs=100)
    assert not is_full(burst, threshold=math.inf)
    assert not awaits_first_measurement(burst, threshold=math.inf, prewarmed=1, waited=False)


SLOTS = 2
"""The rig's case: load_fnc is the running jobs over 2 slots, threshold 0.75: 2 jobs fit (the
first leaves the load at 0.5, where a second is still taken; two make it 1.0)."""


@pytest.mark.timeout(10)  # a property: 200 generated schedules, not one case
@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.sampled_from(["offer", "start", "measure"]), max_size=40),
    prewarmed=st.integers(min_value=0, max_value=6),
)
def test_a_burst_never_holds_more_jobs_than_the_threshold_allows(
    steps: list[str], prewarmed: int
) -> None:
    """Offers, job starts and measurements in any order: never more than 2 jobs held.

    An offer that must wait for a measurement is not taken at its step; taking it later is
    another offer at a later step.
    """
    running = waiting = measured = 0
    load = 0.0
    for step in steps:
        if step == "offer":
            occupancy = Occupancy(load=load, measured_jobs=measured, held_jobs=running + waiting)
            if not is_full(occupancy, threshold=0.75) and not awaits_first_measurement(
                occupancy, threshold=0.75, prewarmed=prewarmed, waited=False
            ):
                waiting += 1
        elif step == "start" and waiting:
            waiting, running = waiting - 1, running + 1
        elif step == "measure":
            measured, load = running, min(1.0, running / SLOTS)
        assert running + waiting <= SLOTS


@pytest.mark.parametrize(
    ("raw", "reported"),
    [(0.3, 0.3), (-1.0, 0.0), (3.0, 1.0), (math.nan, 1.0)],
    ids=["in-range", "negative", "above-one", "nan-is-full"],
)
def test_reported_load_is_in_zero_to_one(raw: float, reported: float) -> None:
    assert clamp_load(raw) == reported
