"""bench/companion_report.py: the noise verdict, the seeded arrivals, and what a scale-down cost."""

from __future__ import annotations

import dataclasses

import pytest

from bench import companion_report as report


def comparison(without: list[float], with_companion: list[float]) -> report.Comparison:
    return report.Comparison(
        key="k", title="t", unit="s", without=without, with_companion=with_companion
    )


def test_the_interval_of_a_ratio_between_two_scattered_alike_sides_holds_one() -> None:
    without = [1.00, 1.10, 0.95, 1.05, 1.02, 0.98, 1.08, 0.97]
    with_companion = [1.03, 0.96, 1.07, 1.00, 0.99, 1.09, 0.94, 1.04]
    interval = report.ratio_interval(without, with_companion)
    assert interval is not None
    low, high = interval
    assert low < 1.0 < high
    assert high - low < 0.2


def test_the_interval_is_the_same_for_the_same_samples() -> None:
    without, with_companion = [1.0, 1.2, 0.9, 1.1], [1.1, 1.0, 1.3, 1.2]
    assert report.ratio_interval(without, with_companion) == report.ratio_interval(
        without, with_companion
    )


def test_the_interval_needs_three_samples_a_side() -> None:
    assert report.ratio_interval([1.0, 1.1], [1.0, 1.1, 1.2]) is None


@pytest.mark.parametrize(
    ("interval", "verdict"),
    [
        ((0.97, 1.04), "within noise"),
        ((1.0, 1.0), "within noise"),
        ((1.02, 1.10), "higher, beyond noise"),
        ((0.90, 0.99), "lower, beyond noise"),
        (None, "n/a"),
    ],
    ids=["holds-one", "exactly-one", "above", "below", "no-interval"],
)
def test_verdict_says_within_noise_only_when_the_ratio_interval_holds_one(
    interval: tuple[float, float] | None, verdict: str
) -> None:
    assert report.verdict(interval) == verdict


def test_summary_takes_medians_their_difference_and_ratio() -> None:
    row = report.summarize(comparison([1.0, 1.1, 0.9, 1.0], [1.2, 1.1, 1.3, 1.2]))
    assert (row.without, row.with_companion) == (1.0, 1.2)
    assert row.difference == pytest.approx(0.2)
    assert row.ratio == pytest.approx(1.2)
    assert row.verdict == "higher, beyond noise"
    assert row.samples == (4, 4)


def test_a_steady_cost_over_quiet_samples_is_beyond_noise_however_small() -> None:
    row = report.summarize(comparison([100.0] * 6, [100.5] * 6))
    assert row.interval == pytest.approx((1.005, 1.005))
    assert row.verdict == "higher, beyond noise"


def test_arrivals_are_the_same_for_a_seed_and_stay_inside_the_window() -> None:
    first = report.arrivals(7, rate_per_s=0.5, duration_s=60.0)
    assert first == report.arrivals(7, rate_per_s=0.5, duration_s=60.0)
    assert first != report.arrivals(8, rate_per_s=0.5, duration_s=60.0)
    assert list(first) == sorted(first)
    assert all(0.0 < t < 60.0 for t in first)


def test_arrivals_average_the_rate_over_a_long_window() -> None:
    assert len(report.arrivals(1, rate_per_s=1.0, duration_s=2000.0)) == pytest.approx(
        2000, rel=0.1
    )


SIDE = report.DrainSide(
    side=report.WITHOUT,
    round=0,
    patched_at=100.0,
    decisions=(103.0, 110.0),
    observed_until=200.0,
    victims=(),
    dispatched=("a", "b", "c"),
    started=("a", "b"),
    ended={"a": "completed", "b": "shutdown"},
    final_pods=1,
)
"""Patched at 100, decisions at 103 and 110, watched until 200; call b cut, call c unanswered."""


def test_a_victim_holds_capacity_from_the_decision_that_removed_it_until_it_is_gone() -> None:
    early = report.Victim(pod="p1", marked_at=103.5, gone_at=105.0)
    late = report.Victim(pod="p2", marked_at=111.0, gone_at=131.0, calls=1)
    side = dataclasses.replace(SIDE, victims=(early, late))
    assert report.held_s(side, early) == pytest.approx(2.0)  # decided at 103
    assert report.held_s(side, late) == pytest.approx(21.0)  # decided at 110


def test_a_victim_still_there_holds_capacity_until_the_watch_ended() -> None:
    victim = report.Victim(pod="p", marked_at=104.0, gone_at=None)
    side = dataclasses.replace(SIDE, victims=(victim,))
    assert report.held_s(side, victim) == pytest.approx(97.0)  # decided at 103


def test_without_a_decision_line_the_patch_is_the_start() -> None:
    victim = report.Victim(pod="p", marked_at=101.0, gone_at=102.0)
    side = dataclasses.replace(SIDE, decisions=(), victims=(victim,))
    assert report.held_s(side, victim) == pytest.approx(2.0)


def test_a_call_that_started_and_did_not_complete_is_cut_one_never_started_is_apart() -> None:
    assert report.cut(SIDE) == ("b",)
    assert report.unanswered(SIDE) == ("c",)


def test_totals_add_rounds_up_and_the_table_fails_a_side_with_a_cut_call() -> None:
    busy = report.Victim(pod="p", marked_at=104.0, gone_at=124.0, calls=2)
    retired = report.Victim(pod="q", marked_at=104.0, gone_at=105.0, retired=True)
    sides = [
        dataclasses.replace(SIDE, victims=(busy,)),
        dataclasses.replace(
            SIDE,
            side=report.WITH,
            victims=(retired,),
            started=("a", "b"),
            ended={"a": "completed", "b": "completed"},
        ),
    ]
    without = report.totals([sides[0]])
    assert (without.cut, without.busy_victims, without.busy_calls) == (1, 1, 2)
    assert without.held_s == pytest.approx(21.0)
    assert report.totals([sides[1]]).retired == 1
    table = report.render_drain(sides)
    assert "| target: 0 cut | FAIL | PASS |" in table
    assert "| **calls cut** | **1/2** | **0/2** |" in table
