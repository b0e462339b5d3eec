"""What `bench.guard` runs: the scenarios and their fleets, and the calls of each, as plain data.

Pure: the three scenarios (the fleet both sides run in each, and where it starts), the load per
call that makes a worker take a scenario's number of calls, and the seeded calls (Poisson
arrival times or one burst, each call's length, the calls that fill a fleet first), the same on
both sides. It reads no clock and no file and starts nothing.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

GUARD_ON = "guard-on"
GUARD_OFF = "guard-off"
SIDES = (GUARD_ON, GUARD_OFF)
LOAD_THRESHOLD = 0.7
"""The fleets' loadThreshold (the runtime's default): a worker above it is full."""


# -- what is run --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Traffic:
    """The calls every side of every scenario gets (the same calls on both sides)."""

    seed: int
    """Scenario i draws from seed + i."""
    rooms: int = 30
    """Calls measured per side, each a room with a caller in it."""
    rate_per_s: float = 0.5
    """Mean arrivals per second (Poisson) where arrivals are not a burst."""
    wait_s: float = 120.0
    """How long a caller waits in its room for an agent before hanging up."""
    hold_s: tuple[float, float] = (5.0, 20.0)
    """A measured call's length, uniform in this range (seconds, from the agent's join)."""
    filler_hold_s: tuple[float, float] = (15.0, 45.0)
    """The length of a call that fills the fleet before the measured calls, uniform."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """One situation the guard is for, and the fleet both sides run in it."""

    key: str
    title: str
    slots: int
    """Calls a worker takes before it is full (the call agent's load per call set to match)."""
    min_replicas: dict[str, int]
    """Per side: the guard-off side cannot have 0 (the API server refuses it)."""
    max_replicas: int
    burst: bool = False
    """All calls at once instead of Poisson arrivals."""
    fillers: int = 0
    """Calls (no caller, not measured) placed first, one at a time, to fill the fleet."""
    from_zero: bool = False
    """The guard-on side waits for its fleet to scale to zero before the calls."""


def scenarios(rooms: int) -> tuple[Scenario, ...]:
    """(i) from zero, (ii) a full fleet at maxReplicas, (iii) a burst of three times the warm
    headroom: one warm worker of rooms / 3 slots, so the burst is all `rooms` at once."""
    return (
        Scenario(
            key="from-zero",
            title="(i) from zero workers",
            slots=3,
            min_replicas={GUARD_ON: 0, GUARD_OFF: 1},
            max_replicas=6,
            from_zero=True,
        ),
        Scenario(
            key="full",
            title="(ii) a full fleet at maxReplicas while calls end at random",
            slots=3,
            min_replicas={GUARD_ON: 2, GUARD_OFF: 2},
            max_replicas=2,
            fillers=3 * 2,
        ),
        Scenario(
            key="burst",
            title="(iii) a burst of three times the warm headroom",
            slots=max(1, rooms // 3),
            min_replicas={GUARD_ON: 1, GUARD_OFF: 1},
            max_replicas=6,
            burst=True,
        ),
    )


def calls_per_worker(slots: int, threshold: float = LOAD_THRESHOLD) -> int:
    """The call agent's E2E_CALLS_PER_WORKER (P) that makes a worker take `slots` calls.

    Each call adds 1/P to the load, and a worker takes a call while its load is at most the
    threshold, so it is full at the first k with k/P above it: floor(threshold * P) + 1 calls.
    The smallest P that gives `slots` is ceil((slots - 1) / threshold), at least 1."""
    if slots < 1:
        raise ValueError(f"slots: {slots} is not a number of calls >= 1")
    return max(1, math.ceil((slots - 1) / threshold - 1e-9))


def slots_of(calls_per_worker: int, threshold: float = LOAD_THRESHOLD) -> int:
    """Calls a worker takes when each adds 1/calls_per_worker to its load: the first k whose
    load is above the threshold."""
    k = 1
    while k / calls_per_worker <= threshold + 1e-9:
        k += 1
    return k


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedCall:
    offset_s: float
    """When it is placed, from the start of the side's calls."""
    hold_s: float


def arrivals(seed: int, rate_per_s: float, count: int) -> tuple[float, ...]:
    """`count` Poisson arrival times (seconds from the start), drawn from `seed`."""
    rng = random.Random(seed)
    found: list[float] = []
    moment = 0.0
    for _ in range(count):
        moment += rng.expovariate(rate_per_s)
        found.append(round(moment, 3))
    return tuple(found)


def plan_calls(scenario: Scenario, traffic: Traffic, index: int) -> tuple[PlannedCall, ...]:
    """The measured calls of scenario number `index`: the same on both sides."""
    seed = traffic.seed + index
    rng = random.Random(f"{seed}-holds")
    offsets = (
        (0.0,) * traffic.rooms
        if scenario.burst
        else arrivals(seed, traffic.rate_per_s, traffic.rooms)
    )
    low, high = traffic.hold_s
    return tuple(PlannedCall(offset_s=t, hold_s=round(rng.uniform(low, high), 1)) for t in offsets)


def plan_fillers(scenario: Scenario, traffic: Traffic, index: int) -> tuple[float, ...]:
    """The lengths of the calls that fill the fleet first, the same on both sides."""
    rng = random.Random(f"{traffic.seed + index}-fillers")
    low, high = traffic.filler_hold_s
    return tuple(round(rng.uniform(low, high), 1) for _ in range(scenario.fillers))
