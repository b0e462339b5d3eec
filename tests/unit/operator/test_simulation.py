"""The sync loop, proven on a simulated world: the real `Syncer` and `handlers.reconcile` run
against a simulated API server, workers and LiveKit on simulated time (tests/unit/operator/sim).

Named schedules pin the defects found on the rig and in review (each failed before its fix);
hypothesis then draws schedules and faults by the thousand. A failure prints the schedule's JSON:
`python -m tests.unit.operator.sim '<json>'` replays it, step for step.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tests.unit.operator.sim.run import Fault, Outcome, Schedule, simulate

SCHEDULES = int(os.environ.get("SIM_SCHEDULES", "2000"))
"""How many schedules hypothesis draws (`make test` runs the default)."""

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
    "invalid_spec",
    "valid_spec",
)


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    """The operator logs every decision; thousands of rounds would drown the report."""
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


def held(schedule: Schedule) -> Outcome:
    outcome = simulate(schedule)
    assert not outcome.violations, (
        f"{outcome.summary()}\nreplay: python -m tests.unit.operator.sim '{schedule.to_json()}'"
    )
    return outcome


BUSY = ((0.0, 0.3), (40.0, 0.0))
"""Calls arrive for 40 s, then none: the fleet fills, then empties."""


@pytest.mark.parametrize("fault", ["stall", "reconnect"])
def test_a_stalled_or_reconnecting_worker_keeps_its_calls_with_recovery_on(fault: str) -> None:
    # the rig finding: 6 s of SIGSTOP (or a new worker id) cut the worker's 3 live calls
    outcome = held(
        Schedule(
            seed=2,
            recovery=True,
            arrivals_per_s=BUSY,
            call_s=(60.0, 90.0),
            faults=(Fault(at_s=30.0, kind=fault, value=6.0),),
        )
    )
    assert outcome.completed >= 3, outcome.summary()


def test_a_crashed_worker_has_its_calls_dispatched_again() -> None:
    outcome = held(
        Schedule(
            seed=7,
            recovery=True,
            arrivals_per_s=BUSY,
            call_s=(100.0, 110.0),
            duration_s=200.0,
            faults=(Fault(at_s=30.0, kind="crash_worker"),),
        )
    )
    assert outcome.seen.get("worker crashed with calls") == 1, outcome.seen
    assert any(reason == "CallRedispatched" for reason, _ in outcome.events), outcome.events
    assert outcome.seen.get("redispatched", 0) >= 1, outcome.seen


def test_a_fleet_whose_workers_cannot_be_read_holds_its_size() -> None:
    # the rig finding: /worker unreadable on every pod grew the fleet from 1 to maxReplicas
    outcome = held(
        Schedule(
            seed=3,
            max_replicas=8,
            arrivals_per_s=((0.0, 0.0),),
            faults=(Fault(at_s=10.0, kind="unreadable"),),
        )
    )
    assert outcome.max_replicas_seen == 1, outcome.summary()
    assert any("WorkersUnreadable" in message for _, message in outcome.events) or any(
        reason == "WorkersUnreadable" for reason, _ in outcome.events
    ), outcome.events


def test_replicas_that_quota_never_created_are_removed_without_retiring_a_worker() -> None:
    held(
        Schedule(
            seed=5,
            arrivals_per_s=((0.0, 0.4), (40.0, 0.0)),
            call_s=(10.0, 20.0),
            faults=(Fault(at_s=5.0, kind="quota", value=3),),
        )
    )


def test_the_operator_killed_between_retire_and_apply_converges() -> None:
    # down 70 s: longer than the worker's 60 s retirement
    held(
        Schedule(
            seed=6,
            arrivals_per_s=((0.0, 0.4), (40.0, 0.0)),
            call_s=(10.0, 20.0),
            duration_s=200.0,
            faults=(Fault(at_s=1.0, kind="kill_after_retire", value=70.0),),
        )
    )


FILL_THEN_EMPTY = ((0.0, 0.5), (30.0, 0.05))
"""Six workers' worth of short calls for 30 s, then a trickle: the fleet scales down."""


def test_a_scale_down_blocked_by_a_reconnecting_worker_retires_nobody() -> None:
    # review H1: idle workers were retired before the blockers were checked, and stayed out
    outcome = held(
        Schedule(
            seed=11,
            arrivals_per_s=FILL_THEN_EMPTY,
            call_s=(20.0, 40.0),
            faults=(Fault(at_s=35.0, kind="reconnect", value=30.0),),
        )
    )
    assert outcome.seen.get("replicas lowered", 0) >= 3, outcome.seen


def test_a_victim_that_outlived_its_retirement_is_protected_again() -> None:
    # review M1: the operator down 70 s between /retire and the apply; the victim's retirement
    # expired, it took calls, and kept the lowest deletion cost without do-not-disrupt
    outcome = held(
        Schedule(
            seed=1,
            arrivals_per_s=((0.0, 0.5), (30.0, 0.05), (110.0, 0.5), (140.0, 0.05)),
            call_s=(20.0, 40.0),
            duration_s=240.0,
            faults=(Fault(at_s=30.0, kind="kill_after_retire", value=70.0),),
        )
    )
    assert outcome.seen.get("retired", 0) >= 2, outcome.seen


def test_a_scale_down_during_a_rollout_waits_for_it() -> None:
    # review M5: the Deployment controller splits a scale-down across ReplicaSets
    outcome = held(
        Schedule(
            seed=4,
            arrivals_per_s=FILL_THEN_EMPTY,
            call_s=(20.0, 90.0),
            faults=(Fault(at_s=40.0, kind="rollout"),),
        )
    )
    assert outcome.seen.get("rollout", 0) == 1, outcome.seen


def test_a_refused_apply_abandons_its_scale_down_and_is_retried() -> None:
    # review M7: the apply after a scale decision failed and waited for the 30 s resync
    outcome = held(
        Schedule(
            seed=5,
            arrivals_per_s=FILL_THEN_EMPTY,
            call_s=(20.0, 40.0),
            faults=(
                Fault(at_s=45.0, kind="apply_error", value=500.0),
                Fault(at_s=70.0, kind="apply_ok"),
            ),
        )
    )
    assert outcome.seen.get("apply refused", 0) >= 1, outcome.seen


def test_a_scale_up_whose_apply_was_refused_is_applied_once_the_api_server_accepts() -> None:
    # review M7: after a refused apply nothing was retried until the resync, and the status
    # said replicas the Deployment did not have
    outcome = held(
        Schedule(
            seed=0,
            arrivals_per_s=FILL_THEN_EMPTY,
            call_s=(20.0, 40.0),
            faults=(
                Fault(at_s=5.0, kind="apply_error", value=500.0),
                Fault(at_s=20.0, kind="apply_ok"),
            ),
        )
    )
    assert outcome.seen.get("apply refused", 0) >= 1, outcome.seen


def test_a_scale_down_that_fails_midway_puts_its_victims_back_in_service() -> None:
    # the victims' marks refused for 40 s after they agreed to retire: each serves again at once
    outcome = held(
        Schedule(
            seed=1,
            arrivals_per_s=FILL_THEN_EMPTY,
            call_s=(20.0, 40.0),
            faults=(
                Fault(at_s=30.0, kind="victim_mark_error"),
                Fault(at_s=70.0, kind="victim_mark_ok"),
            ),
        )
    )
    assert outcome.seen.get("a victim's mark refused", 0) >= 2, outcome.seen
    assert outcome.seen.get("retirement withdrawn", 0) >= 1, outcome.seen


def test_a_retirement_left_by_an_operator_that_died_is_withdrawn_by_the_next() -> None:
    # down 20 s, less than the retirement: the next operator puts the worker back in service
    outcome = held(
        Schedule(
            seed=1,
            arrivals_per_s=FILL_THEN_EMPTY,
            call_s=(20.0, 40.0),
            faults=(Fault(at_s=30.0, kind="kill_after_retire", value=20.0),),
        )
    )
    assert outcome.seen.get("retirement withdrawn", 0) >= 1, outcome.seen


@pytest.mark.parametrize("down_s", [5.0, 70.0])
def test_a_restarted_operator_starts_from_the_deployment(down_s: float) -> None:
    # review M3: a new leader seeded its size from a status that lagged the Deployment
    held(
        Schedule(
            seed=6,
            arrivals_per_s=FILL_THEN_EMPTY,
            call_s=(20.0, 40.0),
            faults=(
                Fault(at_s=10.0, kind="status_error", value=500.0),
                Fault(at_s=20.0, kind="restart", value=down_s, target=1),
                Fault(at_s=60.0, kind="status_ok"),
            ),
        )
    )


def test_a_second_operator_installation_leaves_the_fleet_alone_and_says_so() -> None:
    # review M8: each installation put its own control token in the pod template: the fleet
    # rolled back and forth between them
    outcome = held(
        Schedule(
            seed=9,
            arrivals_per_s=FILL_THEN_EMPTY,
            call_s=(20.0, 40.0),
            second_operator_at_s=10.0,
        )
    )
    assert [r for r, _ in outcome.events].count("AnotherOperator") == 1, outcome.events
    assert outcome.seen.get("rollout", 0) == 0, outcome.seen


def test_a_stale_pod_watch_is_noticed_and_listed_again() -> None:
    # review M6: a half-open watch froze the operator's pods
    outcome = held(
        Schedule(
            seed=8,
            arrivals_per_s=FILL_THEN_EMPTY,
            call_s=(20.0, 40.0),
            faults=(Fault(at_s=5.0, kind="watch_stale"),),
        )
    )
    assert outcome.seen.get("pods listed", 0) >= 1, outcome.seen
    assert outcome.seen.get("replicas lowered", 0) >= 1, outcome.seen


LOAD_SHAPES = {
    "rise and fall": ((0.0, 0.5), (30.0, 0.0)),
    "steady": ((0.0, 0.2),),
    "burst": ((0.0, 0.05), (20.0, 1.5), (25.0, 0.05)),
    "two waves": ((0.0, 0.4), (20.0, 0.0), (50.0, 0.4), (70.0, 0.0)),
    "quiet": ((0.0, 0.0),),
}
"""Calls per second from each time on: the fleet fills and empties, so it scales both ways."""


@st.composite
def faults(draw: st.DrawFn) -> Fault:
    kind = draw(st.sampled_from(FAULT_KINDS))
    values = {
        "stall": (2.0, 6.0, 20.0, 90.0),
        "reconnect": (1.0, 3.0),
        "apply_error": (409.0, 500.0),
        "watch_delay": (0.5, 2.0, 6.0),
        "quota": (1.0, 2.0, 3.0, 5.0),
        "restart": (0.0, 5.0, 20.0, 70.0),
        "kill_after_retire": (5.0, 70.0),
        "rollout": (0.0, 1.0),
        "status_error": (409.0, 500.0),
    }.get(kind, (0.0,))
    return Fault(
        at_s=round(draw(st.floats(1.0, 100.0)), 1),
        kind=kind,
        value=draw(st.sampled_from(values)),
        target=draw(st.integers(0, 7)),
    )


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
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
        faults=tuple(draw(st.lists(faults(), max_size=6))),
    )


def drawn(part: int) -> Callable[[Schedule], None]:
    """One half of the drawn schedules: two tests, so that `pytest -n 2` runs them side by side,
    each from its own fixed seed (the same schedules every run)."""

    @pytest.mark.timeout(300)
    @pytest.mark.xdist_group(f"drawn-{part}")  # one half on each worker (--dist loadgroup)
    @seed(part)
    @settings(
        max_examples=SCHEDULES // 2,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
        ],
        database=None,
    )
    @given(schedules())
    def test(schedule: Schedule) -> None:
        held(schedule)

    return test  # type: ignore[no-any-return]  # hypothesis' decorators are untyped here


test_drawn_schedules_keep_every_promise_a = drawn(1)
test_drawn_schedules_keep_every_promise_b = drawn(2)
