"""Schedules drawn by hypothesis: the load, the spec's knobs, the faults, and whether the
operator hears the workers' changes (`Schedule.watch`, half of them).

`unguarded()` draws fleets without the dispatch guard (the faults of the cluster and the
workers), `guarded()` fleets with it (LiveKit's faults too), `schedules()` either. The unit tier
runs one guarded schedule in `GUARDED_SHARE`; `explore` runs more outside pytest
(`python -m tests.unit.operator.sim --help`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import seed as seeded
from hypothesis import strategies as st

from tests.unit.operator.sim.run import Fault, Outcome, Schedule, simulate

GUARDED_SHARE = 10
"""One drawn schedule in this many runs the dispatch guard in the unit tier (a guarded one
costs about four unguarded ones)."""

FAULT_KINDS = (
    "stall",
    "reconnect",
    "unreadable",
    "readable",
    "crash_job",
    "crash_worker",
    "apply_error",
    "apply_ok",
    "watch_delay",
    "watch_stale",
    "watch_fresh",
    "quota",
    "rollout",
    "restart",
    "kill_after_retire",
    "status_error",
    "status_ok",
    "busy_race",
    "victim_mark_error",
    "victim_mark_ok",
    "livekit_down",
    "livekit_up",
    "credentials_forbidden",
    "autoscaling_off",
    "autoscaling_on",
    "pause",
    "unpause",
    "resize",
    "invalid_spec",
    "valid_spec",
)
GUARD_FAULT_KINDS = (
    "livekit_down",
    "livekit_flaky",
    "livekit_up",
    "unanswered",
    "end_room",
    "callers_leave",
    "stall",
    "reconnect",
    "crash_job",
    "crash_worker",
    "restart",
    "apply_error",
    "apply_ok",
    "quota",
    "unreadable",
    "readable",
    "status_error",
    "status_ok",
    "autoscaling_off",
    "autoscaling_on",
    "pause",
    "unpause",
    "resize",
    "invalid_spec",
    "valid_spec",
)
"""The guarded schedules' faults: LiveKit's, and the cluster's that touch the guard (the
credentials stay readable: without them there is no guard)."""
VALUES = {
    "stall": (2.0, 6.0, 20.0, 90.0),
    "reconnect": (1.0, 3.0),
    "apply_error": (409.0, 500.0),
    "watch_delay": (0.5, 2.0, 6.0),
    "quota": (1.0, 2.0, 3.0, 5.0),
    "restart": (0.0, 5.0, 20.0, 70.0),
    "kill_after_retire": (5.0, 70.0),
    "rollout": (0.0, 1.0),
    "status_error": (409.0, 500.0),
    "livekit_flaky": (0.2, 0.5),
    "unanswered": (1.0, 3.0, 10.0),
    "resize": (1.0, 2.0, 4.0),
}
LOAD_SHAPES = {
    "rise and fall": ((0.0, 0.5), (30.0, 0.0)),
    "steady": ((0.0, 0.2),),
    "burst": ((0.0, 0.05), (20.0, 1.5), (25.0, 0.05)),
    "two waves": ((0.0, 0.4), (20.0, 0.0), (50.0, 0.4), (70.0, 0.0)),
    "quiet": ((0.0, 0.0),),
}
"""Calls per second from each time on: the fleet fills and empties, so it scales both ways."""

MISS_RATES = (None, 0.001, 0.1)
"""spec.autoscaling.headroom.missRate: off, a strict target and a loose one."""


def _faults(kinds: tuple[str, ...]) -> st.SearchStrategy[Fault]:
    @st.composite
    def fault(draw: st.DrawFn) -> Fault:
        kind = draw(st.sampled_from(kinds))
        return Fault(
            at_s=round(draw(st.floats(1.0, 100.0)), 1),
            kind=kind,
            value=draw(st.sampled_from(VALUES.get(kind, (0.0,)))),
            target=draw(st.integers(0, 7)),
        )

    return fault()


@st.composite
def unguarded(draw: st.DrawFn) -> Schedule:
    low = draw(st.integers(1, 2))
    return Schedule(
        seed=draw(st.integers(0, 2**32)),
        duration_s=120.0,
        interval_s=draw(st.sampled_from((1.0, 2.0, 5.0))),
        min_replicas=low,
        max_replicas=draw(st.integers(low, 8)),
        min_available=draw(st.integers(0, 2)),
        drain_busy=draw(st.booleans()),
        recovery=draw(st.booleans()),
        arrivals_per_s=LOAD_SHAPES[draw(st.sampled_from(sorted(LOAD_SHAPES)))],
        call_s=draw(st.sampled_from(((5.0, 15.0), (10.0, 40.0), (30.0, 90.0)))),
        faults=tuple(draw(st.lists(_faults(FAULT_KINDS), max_size=6))),
        miss_rate=draw(st.sampled_from(MISS_RATES)),
        watch=draw(st.booleans()),
    )


GUARD_SHAPES: dict[str, tuple[tuple[float, float], ...]] = {
    "burst beyond the headroom": ((0.0, 0.05), (20.0, 2.0), (24.0, 0.05), (60.0, 0.0)),
    "full at maxReplicas": ((0.0, 0.5),),
    "asleep, woken": ((0.0, 0.1), (10.0, 0.0), (85.0, 0.15), (95.0, 0.0)),
}
"""The guard's loads: a burst its warm headroom cannot take, a fleet held full at maxReplicas
whose calls end at random, and (with minReplicas 0) a fleet that sleeps and is woken."""


@st.composite
def guarded(draw: st.DrawFn) -> Schedule:
    shape = draw(st.sampled_from(sorted(GUARD_SHAPES)))
    asleep = shape == "asleep, woken"
    low = 0 if asleep else draw(st.integers(0, 1))
    high = draw(st.integers(1, 3) if shape == "full at maxReplicas" else st.integers(2, 6))
    return Schedule(
        seed=draw(st.integers(0, 2**32)),
        duration_s=120.0,
        interval_s=draw(st.sampled_from((1.0, 2.0, 5.0))),
        min_replicas=low,
        max_replicas=high,
        min_available=draw(st.integers(0, 1)),
        drain_busy=draw(st.booleans()),
        recovery=draw(st.booleans()),
        arrivals_per_s=GUARD_SHAPES[shape],
        call_s=(5.0, 25.0) if asleep else draw(st.sampled_from(((10.0, 40.0), (20.0, 90.0)))),
        faults=tuple(draw(st.lists(_faults(GUARD_FAULT_KINDS), max_size=5))),
        guard=True,
        max_wait_s=draw(st.sampled_from((15.0, 30.0, 60.0))),
        scale_to_zero_after_s=draw(st.sampled_from((10.0, 20.0, 30.0))),
        webhooks=draw(st.booleans()),
        impatient=draw(st.sampled_from((0.0, 0.2, 0.5))),
        miss_rate=draw(st.sampled_from(MISS_RATES)),
        watch=draw(st.booleans()),
    )


def schedules() -> st.SearchStrategy[Schedule]:
    """Every kind of schedule, with the dispatch guard or without."""
    return st.one_of(unguarded(), guarded())


def held(schedule: Schedule) -> Outcome:
    """Run a schedule; fail with its replay command when it broke a promise."""
    outcome = simulate(schedule)
    assert not outcome.violations, (
        f"{outcome.summary()}\nreplay: python -m tests.unit.operator.sim '{schedule.to_json()}'"
    )
    return outcome


def checker(
    strategy: st.SearchStrategy[Schedule], *, examples: int, seed: int
) -> Callable[[], None]:
    """A hypothesis test of `examples` schedules drawn from `strategy`, from `seed`."""

    @seeded(seed)
    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
        ],
        database=None,
    )
    @given(strategy)
    def check(schedule: Schedule) -> None:
        held(schedule)

    return check


def explore(examples: int, *, seed: int, only_guarded: bool) -> None:
    """Draw and run `examples` schedules (raises, with the replay command, on a failure)."""
    logging.disable(logging.CRITICAL)
    checker(guarded() if only_guarded else schedules(), examples=examples, seed=seed)()
