"""Warm headroom from a miss-rate target: how many free call slots, and warm workers, to keep.

The warm headroom can be asked for as a miss rate, "at most 0.1 % of calls find no worker",
instead of a number of workers (issue 15). A call finds no worker when every free slot was
taken before the fleet could add one, so the headroom follows from two things the operator
measures: the rate at which calls start (`ArrivalRate`) and how long the fleet takes from a
call taking a slot to a new worker registering in its place (`ReactionTime`). Nothing the
fleet does now adds a slot within that reaction time R, so `free_slots` keeps enough for the
calls that may be on R from now: those arriving meanwhile (Poisson at the rate) and, when the
mean call length is known, those of now that are still on (calls that end free their slots).
`derive` turns slots into warm workers and records the inputs for the status (`WarmHeadroom`).

This module owns those estimates and that arithmetic, nothing else. It is pure: no I/O, no
clock (times are arguments), no kopf, kubernetes, aiohttp or prometheus_client; the estimators
are frozen values that the caller keeps between observation rounds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace

MIN_MISS_RATE = 1e-9
"""The smallest miss-rate target accepted (the tail arithmetic is exact well below it)."""
EXACT_VARIANCE_MAX = 1e4
"""Above this variance of the calls on one reaction time ahead, `free_slots` uses the normal
approximation instead of summing the exact tail (whose cost grows with the deviation)."""
MIN_ELAPSED_S = 1.0
"""The shortest time an arrival rate is taken over, in seconds."""
_SPAN = 12.0
"""Deviations beyond the mean (plus _SPAN_ADD) past which a tail is below e^-70 (Bernstein):
the exact sums stop there."""
_SPAN_ADD = 60.0


# ---------------------------------------------------------------------------------------------
# The arrival rate
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ArrivalRate:
    """The rate at which calls (job starts) arrive, from the starts counted in each round.

    Two exponentially weighted counts of the starts, one over a short window and one over a
    long one, and the rate is the higher of the two. Why two, and why the higher: a miss costs
    more than an idle slot, so the estimate must follow a burst up within about one reaction
    time (the short window: 90 % of a step is seen after 2.3 windows, 69 s with the default
    30 s; in the replays a 60 s window missed twice as many calls or more at the starts of
    bursts, for some 8 % fewer idle worker-minutes), but must not forget a burst the moment it
    pauses, because bursts come back (the long window, which decays by 1/e per window; it
    matters most while the mean call length is unknown). A single window is either slow up or
    quick down; a sliding window count would need the rounds themselves kept in the value,
    where an exponentially weighted count is one number per window whatever the round lengths.

    The starts of a round are spread evenly over its interval, so a long gap between rounds
    (a missed round, an operator restart) is a lower rate over a longer time, not a spike, and
    rounds of zero starts just decay. The counts are divided by the weight the elapsed time
    can have given them (a window's weight only reaches its length after many windows), so the
    estimate is unbiased from the second observation on. The first observation starts the
    clock only: its starts have no known interval.
    """

    short_window_s: float = 30.0
    """Time constant of the quick estimate, in seconds: a step is 90 % seen after 2.3 of them,
    which should be about the fleet's reaction time."""
    long_window_s: float = 900.0
    """Time constant of the slow estimate, in seconds: how long a burst is remembered."""
    first_s: float | None = None
    """Time of the first observation; None before any."""
    last_s: float | None = None
    """Time of the latest observation; None before any."""
    short_count: float = 0.0
    """Starts weighted by exp(-age / short_window_s)."""
    long_count: float = 0.0
    """Starts weighted by exp(-age / long_window_s)."""

    def observed(self, now_s: float, starts: int) -> ArrivalRate:
        """This estimate after a round that counted `starts` job starts since the last one.

        A clock that went back counts as no time passing (the starts are kept)."""
        if not math.isfinite(now_s):
            raise ValueError(f"now_s is {now_s!r}, not a finite time")
        if starts < 0:
            raise ValueError(f"starts is {starts}, not a count of job starts (>= 0)")
        if self.last_s is None or self.first_s is None:
            return replace(self, first_s=now_s, last_s=now_s)
        dt = max(0.0, now_s - self.last_s)
        return replace(
            self,
            last_s=max(self.last_s, now_s),
            short_count=_decayed(self.short_count, starts, dt, self.short_window_s),
            long_count=_decayed(self.long_count, starts, dt, self.long_window_s),
        )

    @property
    def short_per_s(self) -> float:
        """The quick estimate, in starts per second."""
        return self._rate(self.short_count, self.short_window_s)

    @property
    def long_per_s(self) -> float:
        """The slow estimate, in starts per second."""
        return self._rate(self.long_count, self.long_window_s)

    @property
    def per_s(self) -> float:
        """The arrival rate to plan for, in starts per second: the higher estimate."""
        return max(self.short_per_s, self.long_per_s)

    def _rate(self, count: float, window_s: float) -> float:
        if self.first_s is None or self.last_s is None:
            return 0.0
        # the weight a constant rate of 1/s since the first observation would have by now;
        # starts within less than a second of it count as a second's (no rate near infinity)
        elapsed_s = max(self.last_s - self.first_s, MIN_ELAPSED_S)
        return count / (-window_s * math.expm1(-elapsed_s / window_s))


def _decayed(count: float, starts: int, dt: float, window_s: float) -> float:
    """An exponentially weighted count after `dt` seconds in which `starts` came, evenly."""
    if dt <= 0.0:
        return count + starts
    fraction = -math.expm1(-dt / window_s)  # 1 - exp(-dt / window)
    return count * (1.0 - fraction) + starts * fraction * window_s / dt


# ---------------------------------------------------------------------------------------------
# The reaction time
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ReactionTime:
    """How long the fleet takes to add a worker: seconds from a scale-up decision to the new
    worker registered, over the latest measured scale-ups.

    The figure to plan with is a high quantile (nearest rank) of the latest `keep`
    measurements, not their maximum: one cold node or slow image pull then widens the headroom
    for a while without holding it wide for the next `keep` scale-ups alone. Until
    `min_samples` measurements exist, `default_s` counts as one of them, so the first fast
    scale-up does not shrink the headroom on its own.
    """

    default_s: float = 60.0
    """The reaction time assumed before measurements, in seconds (default 60)."""
    keep: int = 20
    """How many of the latest measurements count."""
    quantile: float = 0.9
    """Which quantile of them is planned for, in (0, 1]."""
    min_samples: int = 3
    """Measurements needed before `default_s` no longer counts."""
    samples_s: tuple[float, ...] = ()
    """The latest measurements, oldest first, in seconds."""

    def measured(self, seconds: float) -> ReactionTime:
        """This estimate with one more scale-up measured, the oldest beyond `keep` dropped."""
        if not math.isfinite(seconds) or seconds < 0.0:
            raise ValueError(f"a reaction time is {seconds!r}, not a duration in seconds")
        return replace(self, samples_s=(*self.samples_s, seconds)[-self.keep :])

    def conservative_s(self, *, waiting_s: float = 0.0) -> float:
        """The reaction time to plan for, in seconds.

        `waiting_s`: how long the oldest scale-up still in progress has waited; it is at least
        that long already (a cluster out of nodes must widen the headroom before it ends)."""
        samples = self.samples_s
        if len(samples) < self.min_samples:
            samples = (*samples, self.default_s)
        ordered = sorted(samples)
        rank = max(1, math.ceil(self.quantile * len(ordered)))
        return max(ordered[rank - 1], waiting_s)


# ---------------------------------------------------------------------------------------------
# Free slots for a miss rate
# ---------------------------------------------------------------------------------------------


def free_slots(*, arriving: float, miss_rate: float, busy: int = 0, staying: float = 1.0) -> int:
    """The free call slots to keep now so that at most `miss_rate` of the calls find none.

    `arriving`: the mean number of calls that arrive within one reaction time R and are still
    on at its end (rate * R when calls outlast R). `busy`: the calls on now. `staying`: the
    probability that one of them is still on R from now (1.0: calls outlast R).

    A slot taken now is replaced R later at the earliest, so a call arriving R from now finds
    a slot exactly when the calls on just before it, Y, are fewer than the capacity kept now,
    busy + k. Y is the busy calls still on, Binomial(busy, staying), plus the calls that came
    meanwhile and are still on, Poisson(arriving); with Poisson arrivals a call sees Y as it
    is at any moment (Poisson arrivals see time averages), so k is the smallest with
    P(Y >= busy + k) <= miss_rate. With staying = 1 that is the smallest k with
    P(N >= k) <= miss_rate, N ~ Poisson(rate * R): one more than the window quantile
    P(N > k) <= miss_rate, because the call itself needs a slot (without it a low rate would
    keep no slot, and every one of its calls would wait).

    At least one slot while calls arrive (the model counts on calls ending; a call arriving
    now needs a slot whatever it says), none when none do. Exact (a sum of the tails) while
    the variance of Y is at most EXACT_VARIANCE_MAX, then the normal approximation with the
    skewness term (Cornish-Fisher) and a continuity correction, within a slot of the exact
    answer there, so the result may step by one where the method changes.
    """
    if not MIN_MISS_RATE <= miss_rate < 1.0:
        raise ValueError(f"miss_rate is {miss_rate!r}, not in [{MIN_MISS_RATE}, 1)")
    if not math.isfinite(arriving) or arriving < 0.0:
        raise ValueError(f"arriving is {arriving!r}, not a mean count of calls >= 0")
    if busy < 0:
        raise ValueError(f"busy is {busy}, not a count of calls >= 0")
    if not 0.0 <= staying <= 1.0:
        raise ValueError(f"staying is {staying!r}, not a probability")
    if arriving == 0.0:
        return 0
    if arriving + busy * staying * (1.0 - staying) > EXACT_VARIANCE_MAX:
        capacity = _normal_capacity(arriving, busy, staying, miss_rate)
    else:
        capacity = _exact_capacity(arriving, busy, staying, miss_rate)
    return max(1, capacity - busy)


def _exact_capacity(arriving: float, busy: int, staying: float, miss_rate: float) -> int:
    """The smallest c with P(Y >= c) <= miss_rate, Y ~ Binomial(busy, staying) +
    Poisson(arriving): P(Y >= c) = sum over s of P(S = s) P(A >= c - s), bisected on c."""
    low, tails = _poisson_tails(arriving)
    top = low + len(tails) - 1
    still = _binomial_pmf(busy, staying)

    def at_least(c: int) -> float:
        total = 0.0
        for s, probability in still:
            j = c - s
            total += probability * (1.0 if j < low else tails[j - low] if j <= top else 0.0)
        return total

    lo, hi = 0, top + max(s for s, _ in still) + 1  # P(Y >= hi) is 0 in these sums
    while lo < hi:
        mid = (lo + hi) // 2
        if at_least(mid) <= miss_rate:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _poisson_tails(mean: float) -> tuple[int, list[float]]:
    """(low, tails) with tails[j - low] = P(A >= j), A ~ Poisson(mean > 0), for j from low to
    the top of the range; below low the tail is 1 and above the top 0, each within e^-70.

    Summed from the top, smallest terms first, so that no tail is 1 minus something."""
    spread = _SPAN * math.sqrt(mean) + _SPAN_ADD
    low, top = max(0, math.floor(mean - spread)), math.ceil(mean + spread)
    mode = math.floor(mean)
    log_mode = -mean + mode * math.log(mean) - math.lgamma(mode + 1)
    pmf = _around_mode(low, top, mode, log_mode, lambda j: mean / (j + 1))
    tails, total = [0.0] * len(pmf), 0.0
    for i in range(len(pmf) - 1, -1, -1):
        total += pmf[i]
        tails[i] = total
    return low, tails


def _binomial_pmf(n: int, p: float) -> list[tuple[int, float]]:
    """(s, P(S = s)) of S ~ Binomial(n, p) over the range that holds all but e^-70 of it."""
    if p in (0.0, 1.0) or n == 0:
        return [(round(n * p), 1.0)]
    spread = _SPAN * math.sqrt(n * p * (1.0 - p)) + _SPAN_ADD
    low, high = max(0, math.floor(n * p - spread)), min(n, math.ceil(n * p + spread))
    mode = min(n, math.floor((n + 1) * p))
    log_mode = (
        math.lgamma(n + 1)
        - math.lgamma(mode + 1)
        - math.lgamma(n - mode + 1)
        + mode * math.log(p)
        + (n - mode) * math.log1p(-p)
    )
    odds = p / (1.0 - p)
    pmf = _around_mode(low, high, mode, log_mode, lambda s: (n - s) / (s + 1) * odds)
    return list(enumerate(pmf, start=low))


def _around_mode(
    low: int, high: int, mode: int, log_mode: float, up: Callable[[int], float]
) -> list[float]:
    """P(X = j) for j in [low, high], from log P(X = mode) and the ratio up(j) = P(X = j + 1) /
    P(X = j): a product of ratios outward from the mode, where the mass is, so that nothing
    overflows and only negligible terms far out can underflow (to 0)."""
    relative = [0.0] * (high - low + 1)
    relative[mode - low] = 1.0
    for j in range(mode, high):
        relative[j + 1 - low] = relative[j - low] * up(j)
    for j in range(mode, low, -1):
        relative[j - 1 - low] = relative[j - low] / up(j - 1)
    scale = math.exp(log_mode)
    return [value * scale for value in relative]


def _normal_capacity(arriving: float, busy: int, staying: float, miss_rate: float) -> int:
    """`_exact_capacity` for a large variance: P(Y >= c) ~ P(X >= c - 0.5), X normal with
    Y's first three cumulants (Cornish-Fisher: x = mean + z sd + (z^2 - 1) k3 / (6 var))."""
    survivors = busy * staying * (1.0 - staying)
    mean = arriving + busy * staying
    variance = arriving + survivors
    third = arriving + survivors * (1.0 - 2.0 * staying)
    z = -statistics.NormalDist().inv_cdf(miss_rate)
    x = mean + z * math.sqrt(variance) + (z * z - 1.0) * third / (6.0 * variance)
    return max(0, math.ceil(x + 0.5))


# ---------------------------------------------------------------------------------------------
# Warm workers, and the derivation the status shows
# ---------------------------------------------------------------------------------------------


def warm_workers(slots: int, *, slots_per_worker: int, max_workers: int) -> int:
    """Idle workers that hold `slots` free call slots, at most `max_workers`.

    `slots_per_worker`: the calls a worker takes before it reports itself full (its load
    threshold over the load one call adds)."""
    if slots_per_worker < 1:
        raise ValueError(f"slots_per_worker is {slots_per_worker}, not at least 1")
    return max(0, min(-(-slots // slots_per_worker), max_workers))


@dataclass(frozen=True, slots=True, kw_only=True)
class WarmHeadroom:
    """The warm workers derived from a miss-rate target, and what they were derived from."""

    warm_workers: int
    """Idle workers to keep registered beyond those the calls occupy (at most the cap)."""
    free_slots: int
    """Free call slots the miss rate asks for (before the cap)."""
    arrival_rate_per_s: float
    """Job starts per second planned for."""
    reaction_s: float
    """Seconds from a call taking a slot to a new worker registered in its place."""
    miss_rate: float
    """The target: the fraction of calls that may find no free slot."""
    slots_per_worker: int
    """Calls a worker takes before it is full."""
    busy_calls: int = 0
    """Calls on when derived."""
    mean_call_s: float | None = None
    """Mean call length in seconds; None: unknown, calls are taken to outlast the reaction."""
    arriving: float = 0.0
    """Calls expected to arrive within the reaction time and still be on at its end."""
    capped: bool = False
    """The cap (maxReplicas) held the warm workers below what the target asks for."""

    @property
    def message(self) -> str:
        """The derivation for a person, e.g. `0.250 calls/s for 75 s (calls of 180 s, 40 on):
        29 free slots keep misses <= 0.1 %: 8 warm workers of 4 slots`."""
        calls = (
            f" (calls of {self.mean_call_s:.0f} s, {self.busy_calls} on)"
            if self.mean_call_s is not None
            else ""
        )
        text = (
            f"{self.arrival_rate_per_s:.3f} calls/s for {self.reaction_s:.0f} s{calls}: "
            f"{self.free_slots} free slots keep misses <= {self.miss_rate * 100:.2g} %: "
            f"{self.warm_workers} warm workers of {self.slots_per_worker} slots"
        )
        return f"{text}, capped" if self.capped else text


def derive(
    *,
    arrival_rate_per_s: float,
    reaction_s: float,
    miss_rate: float,
    slots_per_worker: int,
    max_workers: int,
    busy_calls: int = 0,
    mean_call_s: float | None = None,
) -> WarmHeadroom:
    """The warm workers that keep the calls finding no slot at most `miss_rate`.

    `reaction_s` should be the whole time from a call taking a slot to its replacement
    registering: the measured scale-up reaction (`ReactionTime.conservative_s`) plus one
    observation round, since a slot taken just after a round is seen only at the next one.

    `mean_call_s` (with `busy_calls`, the calls on now): call lengths are taken as
    exponential with that mean, so a call on now is still on after R with probability
    exp(-R / mean) and a call arriving within R is still on at its end with the mean of that
    over its arrival time. Calls that end free their slots: at a steady rate about as many end
    as arrive, and the headroom covers the fluctuation, not the whole of rate * R. This counts
    on the freed slots staying, so the scale-down must wait at least R (its stabilization
    window; 300 s by default). Without it (None) every call is taken to outlast R: more
    headroom, never less. With it, a longer R can ask for fewer slots when many calls are on,
    since more of them end within it; without it the slots never fall as R grows.
    """
    if not math.isfinite(arrival_rate_per_s) or arrival_rate_per_s < 0.0:
        raise ValueError(f"arrival_rate_per_s is {arrival_rate_per_s!r}, not a rate >= 0")
    if not math.isfinite(reaction_s) or reaction_s < 0.0:
        raise ValueError(f"reaction_s is {reaction_s!r}, not a duration >= 0")
    if mean_call_s is None:
        staying, arriving = 1.0, arrival_rate_per_s * reaction_s
    elif mean_call_s > 0.0:
        ratio = reaction_s / mean_call_s
        staying = math.exp(-ratio)
        # rate * mean * (1 - e^-ratio), as rate * R * (1 - e^-ratio) / ratio: no underflow
        # to 0 calls for a tiny reaction time
        arriving = arrival_rate_per_s * reaction_s * (-math.expm1(-ratio) / ratio if ratio else 1.0)
    else:
        raise ValueError(f"mean_call_s is {mean_call_s!r}, not a duration > 0")
    slots = free_slots(arriving=arriving, miss_rate=miss_rate, busy=busy_calls, staying=staying)
    warm = warm_workers(slots, slots_per_worker=slots_per_worker, max_workers=max_workers)
    return WarmHeadroom(
        warm_workers=warm,
        free_slots=slots,
        arrival_rate_per_s=arrival_rate_per_s,
        reaction_s=reaction_s,
        miss_rate=miss_rate,
        slots_per_worker=slots_per_worker,
        busy_calls=busy_calls,
        mean_call_s=mean_call_s,
        arriving=arriving,
        capped=warm * slots_per_worker < slots,
    )
