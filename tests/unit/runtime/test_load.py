"""The load window and the FULL rule."""

from __future__ import annotations

import math

import pytest

from worker_runtime.load import LoadWindow, clamp_load, is_full

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
    assert is_full(load, threshold) is full


@pytest.mark.parametrize(
    ("raw", "reported"),
    [(0.3, 0.3), (-1.0, 0.0), (3.0, 1.0), (math.nan, 1.0)],
    ids=["in-range", "negative", "above-one", "nan-is-full"],
)
def test_reported_load_is_in_zero_to_one(raw: float, reported: float) -> None:
    assert clamp_load(raw) == reported
