"""Headroom from a miss-rate target, replayed: a bursty day of calls through a tiny fleet model,
once with the derived headroom and once with each static one (`headroom`, issue 15 item 4).

The trace: a day's rise and fall compressed into four hours (5 % of the peak rate at night),
times bursts of three times the rate (Markov-modulated: 10-minute bursts, 30 minutes apart on
average), Poisson arrivals, exponential calls of 3 minutes on average; seeded, so every run
replays the same calls. A 30-minute warm-up is run and not counted, for both policies alike.

The fleet: workers of SLOTS call slots. A call takes a free slot of a registered worker at
once, or is a miss (it waits, and takes the first slot that frees or registers). Every
PERIOD_S the policy sees the calls on (busy and waiting) and asks for ceil(calls / SLOTS) +
warm workers; a new worker registers 45 to 90 s after it was asked for (each worker's own
draw, the same for both policies in order); scale-down takes the highest ask of the last
300 s (the autoscaler's default stabilization), cancels starting workers first, then removes
idle ones (slots are counted as if calls could be packed, alike for both policies). Idle
worker-minutes are the free slots of registered workers, in workers, plus the starting
workers: capacity paid for and not serving.

The derived policy runs the module as the operator would: `ArrivalRate` on the calls that took
a slot each round, `ReactionTime` on the measured scale-ups plus one round, the mean length of
the last 100 calls that ended (once 20 have), a 0.1 % target. The static policy compared is
the smallest N warm workers with no more misses than the derived one, found by trying every N:
the cheapest static setting, in hindsight, as good as the derived one (every smaller N misses
more; the default of one warm worker misses 11 to 19 % of the calls). Run with `-s` to see the
figures.

What this does not show: on traffic whose level holds steady for hours (bursts without the
day's rise and fall), the static setting tuned in hindsight idles about as much as the derived
one or less, and bursts of ten times the rate that start at once outrun a measured rate (the
derived policy then misses more than its target); the derived headroom wins by following the
level, not by foreseeing a step.
"""

from __future__ import annotations

import functools
import heapq
import math
import random
from collections import deque
from dataclasses import dataclass, field

import pytest

from agentworker_operator import headroom

pytestmark = pytest.mark.timeout(10)  # some 30 replays of a four-hour day, about 3 s in all

SLOTS = 4
PERIOD_S = 10.0
WINDOW_S = 300.0
WARMUP_S = 1800.0
END_S = WARMUP_S + 4 * 3600.0
MAX_WORKERS = 60
MISS_RATE = 0.001
SEEDS = (0, 1, 2)


@dataclass(frozen=True, slots=True)
class Trace:
    arrivals: tuple[float, ...]
    durations_s: tuple[float, ...]
    reactions_s: tuple[float, ...]
    """Seconds from the ask to registered, of the first, second, ... worker asked for."""


def bursty_day(seed: int) -> Trace:
    """Poisson arrivals (thinned) at peak * (a day's sin^2 cycle, 5 % floor) * (3 in bursts)."""
    rng = random.Random(seed)
    peak_per_s, burst_factor = 10 / 60, 3.0
    phases: list[tuple[float, bool]] = []  # (end, burst) of each phase
    t, burst = 0.0, False
    while t < END_S:
        t += rng.expovariate(1 / (600.0 if burst else 1800.0))
        phases.append((t, burst))
        burst = not burst
    top = peak_per_s * burst_factor
    arrivals: list[float] = []
    t, phase = 0.0, 0
    while (t := t + rng.expovariate(top)) < END_S:
        while phases[phase][0] <= t:
            phase += 1
        day = 0.05 + 0.95 * math.sin(math.pi * t / (4 * 3600.0)) ** 2
        rate = peak_per_s * day * (burst_factor if phases[phase][1] else 1.0)
        if rng.random() < rate / top:
            arrivals.append(t)
    return Trace(
        arrivals=tuple(arrivals),
        durations_s=tuple(rng.expovariate(1 / 180.0) for _ in arrivals),
        reactions_s=tuple(rng.uniform(45.0, 90.0) for _ in range(4096)),
    )


class Policy:
    """How many warm workers to ask for, from what the operator sees each round."""

    def warm(self, now_s: float, starts: int, busy: int, waiting_s: float) -> int:
        raise NotImplementedError

    def registered(self, reaction_s: float) -> None:
        """A worker asked for `reaction_s` ago registered."""

    def ended(self, call_s: float) -> None:
        """A call of `call_s` seconds ended."""


@dataclass
class Static(Policy):
    workers: int

    def warm(self, now_s: float, starts: int, busy: int, waiting_s: float) -> int:
        return self.workers


@dataclass
class Derived(Policy):
    """The module's estimates and derivation, as the operator would run them."""

    count_endings: bool = True
    """Give the mean call length (of the last 100 calls that ended) to `derive`."""
    rate: headroom.ArrivalRate = field(default_factory=headroom.ArrivalRate)
    reaction: headroom.ReactionTime = field(default_factory=headroom.ReactionTime)
    lengths: deque[float] = field(default_factory=lambda: deque(maxlen=100))

    def warm(self, now_s: float, starts: int, busy: int, waiting_s: float) -> int:
        self.rate = self.rate.observed(now_s, starts)
        known = self.count_endings and len(self.lengths) >= 20
        derived = headroom.derive(
            arrival_rate_per_s=self.rate.per_s,
            reaction_s=self.reaction.conservative_s(waiting_s=waiting_s) + PERIOD_S,
            miss_rate=MISS_RATE,
            slots_per_worker=SLOTS,
            max_workers=MAX_WORKERS,
            busy_calls=busy,
            mean_call_s=sum(self.lengths) / len(self.lengths) if known else None,
        )
        return derived.warm_workers

    def registered(self, reaction_s: float) -> None:
        self.reaction = self.reaction.measured(reaction_s)

    def ended(self, call_s: float) -> None:
        self.lengths.append(call_s)


@dataclass
class Figures:
    calls: int = 0
    misses: int = 0
    idle_s: float = 0.0
    worker_s: float = 0.0

    @property
    def idle_worker_minutes(self) -> float:
        return self.idle_s / 60

    def __str__(self) -> str:
        return (
            f"{self.misses} misses of {self.calls} calls ({self.misses / self.calls:.2%}), "
            f"{self.idle_s / 60:.0f} idle of {self.worker_s / 60:.0f} worker-minutes"
        )


@dataclass
class Fleet:
    """The fleet model's state; `replay` drives it through a trace."""

    trace: Trace
    policy: Policy
    registered: int = 2
    busy: int = 0
    waiting: deque[float] = field(default_factory=deque)
    """Lengths of the calls that found no slot, in order of arrival."""
    starting: dict[int, float] = field(default_factory=dict)
    """Worker number -> when it was asked for."""
    asked: int = 0
    starts: int = 0
    """Calls that took a slot since the last round."""
    asks: deque[tuple[float, int]] = field(default_factory=deque)
    events: list[tuple[float, int, str, float]] = field(default_factory=list)
    """(when, order of scheduling, kind, value): a heap."""
    scheduled: int = 0
    figures: Figures = field(default_factory=Figures)

    def at(self, when: float, kind: str, value: float = 0.0) -> None:
        self.scheduled += 1
        heapq.heappush(self.events, (when, self.scheduled, kind, value))

    @property
    def free(self) -> int:
        return self.registered * SLOTS - self.busy

    def take(self, now: float, length_s: float) -> None:
        self.busy += 1
        self.starts += 1
        self.at(now + length_s, "end", length_s)

    def serve_waiting(self, now: float) -> None:
        while self.waiting and self.free > 0:
            self.take(now, self.waiting.popleft())

    def arrive(self, now: float, length_s: float, *, counted: bool) -> None:
        self.figures.calls += counted
        if not self.waiting and self.free > 0:
            self.take(now, length_s)
        else:
            self.figures.misses += counted
            self.waiting.append(length_s)

    def end(self, now: float, length_s: float) -> None:
        self.busy -= 1
        self.policy.ended(length_s)
        self.serve_waiting(now)

    def register(self, now: float, number: int) -> None:
        if number in self.starting:  # not cancelled by a scale-down meanwhile
            self.policy.registered(now - self.starting.pop(number))
            self.registered += 1
            self.serve_waiting(now)

    def round(self, now: float) -> None:
        calls = self.busy + len(self.waiting)
        waited = max((now - asked for asked in self.starting.values()), default=0.0)
        warm = self.policy.warm(now, self.starts, calls, waited)
        self.starts = 0
        wanted = min(MAX_WORKERS, math.ceil(calls / SLOTS) + warm)
        self.asks.append((now, wanted))
        while self.asks[0][0] <= now - WINDOW_S:
            self.asks.popleft()
        current = self.registered + len(self.starting)
        for _ in range(wanted - current):
            self.starting[self.asked] = now
            reaction = self.trace.reactions_s[self.asked % len(self.trace.reactions_s)]
            self.at(now + reaction, "register", self.asked)
            self.asked += 1
        excess = current - max(ask for _, ask in self.asks)
        for number in sorted(self.starting, reverse=True)[: max(0, excess)]:
            del self.starting[number]
            excess -= 1
        self.registered -= max(0, min(excess, self.free // SLOTS))


def replay(trace: Trace, policy: Policy) -> Figures:
    """The trace through the fleet model under `policy`; figures after the warm-up."""
    fleet = Fleet(trace=trace, policy=policy)
    for number, when in enumerate(trace.arrivals):
        fleet.at(when, "arrive", number)
    for number in range(math.ceil(END_S / PERIOD_S)):
        fleet.at(number * PERIOD_S, "round")
    last = 0.0
    while fleet.events:
        now, _, kind, value = heapq.heappop(fleet.events)
        if now > END_S:
            break
        if now > WARMUP_S:
            span = now - max(last, WARMUP_S)
            fleet.figures.idle_s += span * (fleet.free / SLOTS + len(fleet.starting))
            fleet.figures.worker_s += span * (fleet.registered + len(fleet.starting))
        last = now
        if kind == "arrive":
            fleet.arrive(now, trace.durations_s[int(value)], counted=now > WARMUP_S)
        elif kind == "end":
            fleet.end(now, value)
        elif kind == "register":
            fleet.register(now, int(value))
        else:
            fleet.round(now)
    return fleet.figures


def best_static(trace: Trace, misses: int) -> tuple[int, Figures]:
    """The smallest static headroom (warm workers) with at most `misses` misses."""
    for workers in range(MAX_WORKERS + 1):
        figures = replay(trace, Static(workers))
        if figures.misses <= misses:
            return workers, figures
    raise AssertionError(f"no static headroom up to {MAX_WORKERS} workers has {misses} misses")


@functools.cache
def compared(seed: int) -> tuple[Figures, int, Figures]:
    """The derived policy's figures on a seed's trace, and the best static one's (its warm
    workers and figures); kept, since two tests read seed 0's."""
    trace = bursty_day(seed)
    derived = replay(trace, Derived())
    workers, static = best_static(trace, derived.misses)
    return derived, workers, static


@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed-{seed}" for seed in SEEDS])
def test_the_cheapest_static_headroom_missing_no_more_idles_more_than_the_derived(
    seed: int,
) -> None:
    derived, workers, static = compared(seed)
    default = replay(bursty_day(seed), Static(1))
    print(
        f"\nseed {seed}: derived: {derived}\n"
        f"  best static ({workers} warm workers): {static}\n"
        f"  static default (1 warm worker): {default}"
    )
    assert static.misses <= derived.misses  # as chosen: at least as good as the derived
    assert derived.idle_worker_minutes < static.idle_worker_minutes


def test_counting_the_calls_that_end_is_what_saves_the_idle_workers() -> None:
    """Taking every call to outlast the reaction time (Poisson arrivals alone) asks for the
    whole of rate * R at a steady rate, when about as many calls end as arrive meanwhile."""
    ending, _, static = compared(SEEDS[0])
    outlasting = replay(bursty_day(SEEDS[0]), Derived(count_endings=False))
    print(f"\ncalls end: {ending}\ncalls outlast R: {outlasting}\nbest static: {static}")
    assert ending.idle_worker_minutes < static.idle_worker_minutes < outlasting.idle_worker_minutes
