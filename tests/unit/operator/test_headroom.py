"""Headroom from a miss-rate target: the arrival rate, the reaction time, the free slots a miss
rate asks for (checked against an exact sum in 60-digit decimals) and the warm workers."""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentworker_operator import headroom

pytestmark = pytest.mark.timeout(10)  # hypothesis properties with an exact decimal oracle

SHORT_S, LONG_S = 30.0, 900.0
FRESH = headroom.ArrivalRate(short_window_s=SHORT_S, long_window_s=LONG_S)

miss_rates = st.floats(min_value=-6.0, max_value=-0.5).map(lambda e: 10.0**e)
rates = st.floats(min_value=0.0, max_value=5.0)
reactions = st.floats(min_value=0.0, max_value=600.0)
rounds = st.lists(
    st.tuples(st.floats(min_value=-5.0, max_value=3600.0), st.integers(0, 500)), max_size=20
)


def observe(
    rate: headroom.ArrivalRate, start_s: float, period_s: float, starts: list[int]
) -> headroom.ArrivalRate:
    """`rate` after rounds every `period_s` from `start_s`, with these starts."""
    for number, count in enumerate(starts):
        rate = rate.observed(start_s + (number + 1) * period_s, count)
    return rate


def steady(per_round: int, period_s: float, total_s: float) -> headroom.ArrivalRate:
    """An estimate after `total_s` of `per_round` starts every `period_s`."""
    first = FRESH.observed(0.0, 0)
    return observe(first, 0.0, period_s, [per_round] * round(total_s / period_s))


# ---------------------------------------------------------------------------------------------
# The arrival rate
# ---------------------------------------------------------------------------------------------


def test_the_first_observation_only_starts_the_clock() -> None:
    first = FRESH.observed(100.0, 50)
    assert first.per_s == 0.0
    assert first.observed(110.0, 5).per_s == pytest.approx(0.5)


@settings(deadline=None, max_examples=100)
@given(per_round=st.integers(0, 50), period_s=st.floats(1.0, 120.0), count=st.integers(1, 200))
def test_a_constant_rate_is_estimated_exactly_from_the_second_observation(
    per_round: int, period_s: float, count: int
) -> None:
    rate = observe(FRESH.observed(0.0, 0), 0.0, period_s, [per_round] * count)
    expected = per_round / period_s
    assert rate.short_per_s == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert rate.long_per_s == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_a_long_gap_spreads_its_starts_over_the_gap_instead_of_a_spike() -> None:
    rate = steady(1, 10.0, 3600.0).observed(3600.0 + 1200.0, 120)  # 20 minutes unobserved
    assert rate.per_s == pytest.approx(0.1, rel=0.05)


def test_a_clock_that_goes_back_counts_as_no_time_passing() -> None:
    rate = steady(1, 10.0, 600.0)
    back = rate.observed(500.0, 3)
    assert back.last_s == rate.last_s
    assert back.per_s > rate.per_s


def test_a_burst_is_followed_within_a_few_short_windows_and_remembered_for_the_long_one() -> None:
    quiet = steady(1, 60.0, 3 * 3600.0)  # one call a minute for three hours
    burst = observe(quiet, 3 * 3600.0, 10.0, [5] * 14)  # then 0.5/s for 140 s
    assert burst.per_s >= 0.9 * 0.5
    after = observe(burst, 3 * 3600.0 + 140.0, 10.0, [0] * 90)  # 15 minutes of silence
    assert 0.01 < after.per_s < burst.per_s * math.exp(-900.0 / LONG_S)
    gone = observe(after, 3 * 3600.0 + 1040.0, 60.0, [0] * 75)  # 5 long windows
    assert gone.per_s < 0.01 * burst.per_s


@pytest.mark.parametrize(
    ("now_s", "starts"),
    [
        pytest.param(math.nan, 1, id="nan-time"),
        pytest.param(math.inf, 1, id="infinite-time"),
        pytest.param(10.0, -1, id="negative-starts"),
    ],
)
def test_impossible_observations_are_refused(now_s: float, starts: int) -> None:
    with pytest.raises(ValueError, match=r"now_s|starts"):
        FRESH.observed(0.0, 0).observed(now_s, starts)


@settings(deadline=None, max_examples=60)
@given(history=rounds)
def test_the_estimate_is_never_negative_nor_infinite(history: list[tuple[float, int]]) -> None:
    rate, now = FRESH, 0.0
    for step_s, starts in history:
        now += step_s
        rate = rate.observed(now, starts)
        assert 0.0 <= rate.per_s < math.inf


@settings(deadline=None, max_examples=60)
@given(history=rounds, per_round=st.integers(1, 30), period_s=st.floats(1.0, 60.0))
def test_a_step_up_is_followed_to_90_percent_within_2_3_short_windows_whatever_came_before(
    history: list[tuple[float, int]], per_round: int, period_s: float
) -> None:
    rate, now = FRESH.observed(0.0, 0), 0.0
    for step_s, starts in history:
        now += max(step_s, 0.0)
        rate = rate.observed(now, starts)
    needed = math.ceil(SHORT_S * math.log(10.0) / period_s)
    after = observe(rate, now, period_s, [per_round] * needed)
    assert after.per_s >= 0.9 * per_round / period_s * (1 - 1e-9)


@settings(deadline=None, max_examples=60)
@given(history=rounds, silence=st.lists(st.floats(0.0, 3600.0), min_size=1, max_size=10))
def test_silence_decays_the_estimate_at_least_as_fast_as_the_long_window(
    history: list[tuple[float, int]], silence: list[float]
) -> None:
    rate, now = FRESH.observed(0.0, 0), 0.0
    for step_s, starts in history:
        now += max(step_s, 0.0)
        rate = rate.observed(now, starts)
    for step_s in silence:
        quiet = rate.observed(now + step_s, 0)
        assert quiet.per_s <= rate.per_s * math.exp(-step_s / LONG_S) * (1 + 1e-9) + 1e-300
        rate, now = quiet, now + step_s


# ---------------------------------------------------------------------------------------------
# The reaction time
# ---------------------------------------------------------------------------------------------


def measured(*seconds: float) -> headroom.ReactionTime:
    reaction = headroom.ReactionTime()
    for value in seconds:
        reaction = reaction.measured(value)
    return reaction


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        pytest.param((), 60.0, id="default-before-any"),
        pytest.param((20.0,), 60.0, id="one-fast-scale-up-does-not-shrink-the-default"),
        pytest.param((20.0, 90.0), 90.0, id="a-slow-one-widens-it-at-once"),
        pytest.param((20.0, 25.0, 30.0), 30.0, id="three-replace-the-default"),
        pytest.param((*([20.0] * 18), 300.0, 400.0), 20.0, id="p90-of-20-ignores-two-outliers"),
        pytest.param((*([20.0] * 17), 300.0, 400.0, 500.0), 300.0, id="but-not-three"),
    ],
)
def test_the_planned_reaction_time(samples: tuple[float, ...], expected: float) -> None:
    assert measured(*samples).conservative_s() == expected


def test_only_the_latest_measurements_count() -> None:
    reaction = measured(*([500.0] * 20), *([30.0] * 20))
    assert reaction.samples_s == (30.0,) * 20
    assert reaction.conservative_s() == 30.0


def test_a_scale_up_still_waiting_is_at_least_that_slow() -> None:
    assert measured(20.0, 25.0, 30.0).conservative_s(waiting_s=240.0) == 240.0


@pytest.mark.parametrize("seconds", [-1.0, math.nan, math.inf], ids=["negative", "nan", "inf"])
def test_an_impossible_measurement_is_refused(seconds: float) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        headroom.ReactionTime().measured(seconds)


@settings(deadline=None, max_examples=60)
@given(samples=st.lists(st.floats(0.0, 3600.0), max_size=40), waiting_s=st.floats(0.0, 3600.0))
def test_the_planned_reaction_time_lies_within_what_counts(
    samples: list[float], waiting_s: float
) -> None:
    reaction = measured(*samples)
    counted = reaction.samples_s
    if len(counted) < reaction.min_samples:
        counted = (*counted, reaction.default_s)
    planned = reaction.conservative_s(waiting_s=waiting_s)
    assert max(min(counted), waiting_s) <= planned <= max(*counted, waiting_s)


# ---------------------------------------------------------------------------------------------
# Free slots: an exact oracle in decimals
# ---------------------------------------------------------------------------------------------


def busy_at_least(capacity: int, arriving: float, busy: int, staying: float) -> Decimal:
    """P(Binomial(busy, staying) + Poisson(arriving) >= capacity), to 60 digits."""
    with localcontext() as context:
        context.prec = 60
        mean, stay = Decimal(arriving), Decimal(staying)
        term, below, tails = (-mean).exp(), Decimal(0), [Decimal(1)]  # tails[j] = P(A >= j)
        for j in range(max(capacity, 0)):
            below += term
            term = term * mean / (j + 1)
            tails.append(1 - below)
        total = Decimal(0)
        for s in range(busy + 1):
            weight = math.comb(busy, s) * power(stay, s) * power(1 - stay, busy - s)
            total += weight * (tails[capacity - s] if capacity - s > 0 else Decimal(1))
        return total


def power(base: Decimal, exponent: int) -> Decimal:
    """base ** exponent, with 0 ** 0 = 1 (Decimal refuses it)."""
    return base**exponent if exponent else Decimal(1)


def misses_with(slots: int, arriving: float, busy: int = 0, staying: float = 1.0) -> float:
    """The fraction of calls that find none of `slots` free slots kept (the model's)."""
    return float(busy_at_least(busy + slots, arriving, busy, staying))


@settings(deadline=None, max_examples=100)
@given(arriving=st.floats(0.0, 150.0), miss_rate=miss_rates)
def test_the_slots_meet_the_miss_rate_and_one_less_would_not(
    arriving: float, miss_rate: float
) -> None:
    slots = headroom.free_slots(arriving=arriving, miss_rate=miss_rate)
    if arriving == 0.0:
        assert slots == 0
        return
    assert misses_with(slots, arriving) <= miss_rate * (1 + 1e-9)
    assert slots == 1 or misses_with(slots - 1, arriving) > miss_rate * (1 - 1e-9)


@settings(deadline=None, max_examples=100)
@given(
    arriving=st.floats(1e-3, 60.0),
    busy=st.integers(0, 30),
    staying=st.floats(0.0, 1.0),
    miss_rate=miss_rates,
)
def test_with_calls_ending_the_slots_meet_the_miss_rate_and_one_less_would_not(
    arriving: float, busy: int, staying: float, miss_rate: float
) -> None:
    slots = headroom.free_slots(arriving=arriving, miss_rate=miss_rate, busy=busy, staying=staying)
    assert misses_with(slots, arriving, busy, staying) <= miss_rate * (1 + 1e-9)
    assert slots == 1 or misses_with(slots - 1, arriving, busy, staying) > miss_rate * (1 - 1e-9)


@pytest.mark.parametrize(
    ("arriving", "miss_rate", "expected"),
    [
        pytest.param(0.0, 0.001, 0, id="no-calls-no-slot"),
        pytest.param(1e-12, 0.001, 1, id="any-call-needs-a-slot"),
        pytest.param(1.2, 0.001, 7, id="a-quiet-fleet"),
        pytest.param(18.0, 0.001, 33, id="a-busy-fleet"),
        pytest.param(18.0, 0.1, 25, id="a-lax-target"),
    ],
)
def test_free_slots_for_known_cases(arriving: float, miss_rate: float, expected: int) -> None:
    assert headroom.free_slots(arriving=arriving, miss_rate=miss_rate) == expected


def test_the_normal_approximation_takes_over_within_a_slot() -> None:
    edge = headroom.EXACT_VARIANCE_MAX
    for miss_rate in (1e-9, 1e-3, 0.3):
        below = headroom.free_slots(arriving=edge * (1 - 1e-9), miss_rate=miss_rate)
        above = headroom.free_slots(arriving=edge * (1 + 1e-9), miss_rate=miss_rate)
        assert abs(above - below) <= 1


def test_a_huge_mean_is_approximated_quickly() -> None:
    mean = 1e9
    slots = headroom.free_slots(arriving=mean, miss_rate=0.001)
    assert mean + 3.0 * math.sqrt(mean) < slots < mean + 3.2 * math.sqrt(mean)


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param({"arriving": 1.0, "miss_rate": 0.0}, id="zero-miss-rate"),
        pytest.param({"arriving": 1.0, "miss_rate": 1.0}, id="miss-rate-one"),
        pytest.param({"arriving": 1.0, "miss_rate": math.nan}, id="nan-miss-rate"),
        pytest.param({"arriving": -1.0, "miss_rate": 0.01}, id="negative-arrivals"),
        pytest.param({"arriving": math.inf, "miss_rate": 0.01}, id="infinite-arrivals"),
        pytest.param({"arriving": 1.0, "miss_rate": 0.01, "busy": -1}, id="negative-busy"),
        pytest.param({"arriving": 1.0, "miss_rate": 0.01, "staying": 1.5}, id="staying-above-1"),
    ],
)
def test_impossible_inputs_are_refused(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="not"):
        headroom.free_slots(**arguments)  # type: ignore[arg-type]  # a float busy is refused too


# ---------------------------------------------------------------------------------------------
# The derivation: monotone where it must be
# ---------------------------------------------------------------------------------------------


def slots_for(
    rate: float,
    reaction_s: float,
    miss_rate: float,
    busy: int = 0,
    mean_call_s: float | None = None,
) -> int:
    return headroom.derive(
        arrival_rate_per_s=rate,
        reaction_s=reaction_s,
        miss_rate=miss_rate,
        slots_per_worker=4,
        max_workers=1000,
        busy_calls=busy,
        mean_call_s=mean_call_s,
    ).free_slots


@settings(deadline=None, max_examples=100)
@given(rates=st.tuples(rates, rates), reaction_s=reactions, miss_rate=miss_rates)
def test_more_calls_never_need_fewer_slots(
    rates: tuple[float, float], reaction_s: float, miss_rate: float
) -> None:
    low, high = sorted(rates)
    assert slots_for(low, reaction_s, miss_rate) <= slots_for(high, reaction_s, miss_rate)


@settings(deadline=None, max_examples=100)
@given(rate=rates, reactions=st.tuples(reactions, reactions), miss_rate=miss_rates)
def test_a_slower_fleet_never_needs_fewer_slots(
    rate: float, reactions: tuple[float, float], miss_rate: float
) -> None:
    fast, slow = sorted(reactions)
    assert slots_for(rate, fast, miss_rate) <= slots_for(rate, slow, miss_rate)


@settings(deadline=None, max_examples=100)
@given(rate=rates, reaction_s=reactions, miss_rates=st.tuples(miss_rates, miss_rates))
def test_a_stricter_target_never_needs_fewer_slots(
    rate: float, reaction_s: float, miss_rates: tuple[float, float]
) -> None:
    strict, lax = sorted(miss_rates)
    assert slots_for(rate, reaction_s, strict) >= slots_for(rate, reaction_s, lax)


@settings(deadline=None, max_examples=100)
@given(
    rates=st.tuples(rates, rates),
    reaction_s=reactions,
    miss_rate=miss_rates,
    busy=st.tuples(st.integers(0, 400), st.integers(0, 400)),
    mean_call_s=st.tuples(st.floats(1.0, 3600.0), st.floats(1.0, 3600.0)),
)
def test_with_calls_ending_more_calls_longer_calls_or_fewer_on_never_need_fewer_slots(
    rates: tuple[float, float],
    reaction_s: float,
    miss_rate: float,
    busy: tuple[int, int],
    mean_call_s: tuple[float, float],
) -> None:
    (low, high), (few, many), (short, long) = sorted(rates), sorted(busy), sorted(mean_call_s)
    base = slots_for(low, reaction_s, miss_rate, many, short)
    assert base <= slots_for(high, reaction_s, miss_rate, many, short)
    assert base <= slots_for(low, reaction_s, miss_rate, few, short)
    assert base <= slots_for(low, reaction_s, miss_rate, many, long)
    assert slots_for(low, reaction_s, miss_rate, many, long) <= slots_for(
        low, reaction_s, miss_rate
    )


def test_zero_rate_keeps_no_warm_worker() -> None:
    derived = headroom.derive(
        arrival_rate_per_s=0.0,
        reaction_s=90.0,
        miss_rate=0.001,
        slots_per_worker=4,
        max_workers=10,
        busy_calls=12,
        mean_call_s=180.0,
    )
    assert (derived.free_slots, derived.warm_workers, derived.capped) == (0, 0, False)


def test_at_a_steady_rate_calls_ending_shrink_the_headroom_to_the_fluctuation() -> None:
    rate, reaction_s, call_s = 0.25, 90.0, 180.0
    steady_busy = round(rate * call_s)  # Little's law
    outlasting = slots_for(rate, reaction_s, 0.001)
    ending = slots_for(rate, reaction_s, 0.001, busy=steady_busy, mean_call_s=call_s)
    assert (outlasting, ending) == (39, 18)


@pytest.mark.parametrize(
    ("slots", "per_worker", "cap", "expected"),
    [
        pytest.param(0, 4, 10, 0, id="none"),
        pytest.param(1, 4, 10, 1, id="one-slot-one-worker"),
        pytest.param(8, 4, 10, 2, id="exact"),
        pytest.param(9, 4, 10, 3, id="rounded-up"),
        pytest.param(90, 4, 10, 10, id="capped"),
        pytest.param(5, 1, 10, 5, id="one-call-workers"),
    ],
)
def test_warm_workers_hold_the_slots(slots: int, per_worker: int, cap: int, expected: int) -> None:
    assert headroom.warm_workers(slots, slots_per_worker=per_worker, max_workers=cap) == expected


def test_a_worker_without_slots_is_refused() -> None:
    with pytest.raises(ValueError, match="slots_per_worker is 0"):
        headroom.warm_workers(3, slots_per_worker=0, max_workers=10)


def test_the_derivation_records_its_inputs_and_says_them() -> None:
    derived = headroom.derive(
        arrival_rate_per_s=0.25,
        reaction_s=75.0,
        miss_rate=0.001,
        slots_per_worker=4,
        max_workers=4,
        busy_calls=40,
        mean_call_s=180.0,
    )
    assert (derived.free_slots, derived.warm_workers, derived.capped) == (19, 4, True)
    assert derived.arriving == pytest.approx(0.25 * 180.0 * -math.expm1(-75.0 / 180.0))
    assert derived.message == (
        f"0.250 calls/s for 75 s (calls of 180 s, 40 on): {derived.free_slots} free slots keep "
        "misses <= 0.1 %: 4 warm workers of 4 slots, capped"
    )


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param({"arrival_rate_per_s": -0.1}, id="negative-rate"),
        pytest.param({"reaction_s": math.nan}, id="nan-reaction"),
        pytest.param({"mean_call_s": 0.0}, id="zero-call-length"),
    ],
)
def test_impossible_derivations_are_refused(arguments: dict[str, float]) -> None:
    inputs = {"arrival_rate_per_s": 0.1, "reaction_s": 60.0, "mean_call_s": 180.0, **arguments}
    with pytest.raises(ValueError, match="not"):
        headroom.derive(
            arrival_rate_per_s=inputs["arrival_rate_per_s"],
            reaction_s=inputs["reaction_s"],
            miss_rate=0.001,
            slots_per_worker=4,
            max_workers=10,
            mean_call_s=inputs["mean_call_s"],
        )
