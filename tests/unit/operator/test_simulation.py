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
from typing import Any

import pytest

from agentworker_operator.sync import CHANGE_GAP_S
from tests.unit.operator.sim import draw, promises
from tests.unit.operator.sim.draw import held
from tests.unit.operator.sim.run import STEP_S, Fault, Outcome, Schedule

SCHEDULES = int(os.environ.get("SIM_SCHEDULES", "2000"))
"""How many schedules hypothesis draws (`make test` runs the default); one in
`draw.GUARDED_SHARE` runs the dispatch guard. More: `python -m tests.unit.operator.sim --help`."""


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    """The operator logs every decision; thousands of rounds would drown the report."""
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


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


# -- the workers' change stream ----------------------------------------------------------------


FILLED_AT_40 = ((0.0, 0.0), (40.0, 6.0), (40.5, 0.0))
"""No call, then three in one step at 40 s: the one worker is full."""


def _filled_then_grown(*, watch: bool) -> tuple[float, float, int]:
    """When the worker filled, when the fleet grew after, and how many changes were heard."""
    outcome = held(
        Schedule(
            seed=1,
            interval_s=30.0,
            arrivals_per_s=FILLED_AT_40,
            call_s=(100.0, 110.0),
            duration_s=70.0,
            watch=watch,
        )
    )
    assert outcome.full_at, outcome.summary()
    filled = outcome.full_at[0]
    grown = [at for at in outcome.grown_at if at >= filled]
    assert grown, outcome.summary()
    return filled, grown[0], outcome.seen.get("a worker's change heard", 0)


def test_a_worker_that_fills_up_is_heard_and_its_fleet_grows_before_the_next_period() -> None:
    # a 30 s sync period: rounds at 30 s and 60 s; the worker fills at 40 s to 41 s
    filled, grown, heard = _filled_then_grown(watch=True)
    assert 40.0 <= filled <= 41.0, filled
    assert heard >= 1
    assert grown - filled <= CHANGE_GAP_S + STEP_S, (filled, grown)
    # without the watch the fleet grows only at the next periodic round
    filled, grown, heard = _filled_then_grown(watch=False)
    assert 40.0 <= filled <= 41.0, filled
    assert heard == 0
    assert grown == 60.0, (filled, grown)


def test_calls_taken_while_unreadable_are_protected_by_the_next_round_that_reads_them() -> None:
    # found here: every worker unreadable for 10 s, then readable; a round another worker's
    # change started at 32.5 s reused the 404 of one whose poll still paused before asking
    # again, and left the calls it had taken meanwhile unprotected: the round its own poll's
    # answer starts (33 s) protects them, or else the next periodic one
    outcome = held(
        Schedule(
            seed=8,
            interval_s=5.0,
            min_replicas=2,
            arrivals_per_s=((0.0, 0.4),),
            call_s=(10.0, 40.0),
            duration_s=60.0,
            faults=(Fault(at_s=20.0, kind="unreadable"), Fault(at_s=30.5, kind="readable")),
            watch=True,
        )
    )
    assert outcome.seen.get("a worker's change heard", 0) >= 1, outcome.seen


# -- warm headroom from a miss-rate target -----------------------------------------------------


STEADY = ((0.0, 0.2),)
"""Twelve calls a minute, from the start."""


@pytest.mark.timeout(10)  # four simulated minutes
def test_a_miss_rate_target_is_derived_from_the_calls_and_the_fleets_own_scale_ups() -> None:
    outcome = held(
        Schedule(
            seed=1,
            interval_s=5.0,
            max_replicas=8,
            arrivals_per_s=STEADY,
            call_s=(20.0, 60.0),
            miss_rate=0.001,
            duration_s=240.0,
        )
    )
    warm = outcome.status["warmHeadroom"]
    assert 6.0 <= warm["arrivalsPerMinute"] <= 24.0, warm  # 12 a minute, Poisson
    # workers register within 3 s of their pod's creation: measured, plus a round, not 60 s
    assert warm["reactionSeconds"] <= 20, warm
    assert 30 <= warm["meanCallSeconds"] <= 50, warm  # calls of 20 to 60 s
    assert warm["missRate"] == 0.001


@pytest.mark.timeout(10)
def test_a_new_operator_process_starts_the_estimates_again_from_their_defaults() -> None:
    outcome = held(
        Schedule(
            seed=1,
            interval_s=5.0,
            max_replicas=8,
            arrivals_per_s=STEADY,
            call_s=(20.0, 60.0),
            miss_rate=0.001,
            duration_s=240.0,
            faults=(Fault(at_s=200.0, kind="restart", value=5.0),),
        )
    )
    warm = outcome.status["warmHeadroom"]
    assert warm["reactionSeconds"] == 60 + 5, warm  # the default until three are measured
    assert "meanCallSeconds" not in warm, warm  # fewer than 20 calls ended since


# -- the dispatch guard ------------------------------------------------------------------------


GUARDED_LIMIT = pytest.mark.timeout(10)
"""A guarded schedule takes up to a second: its guard reads LiveKit every round."""


def guarded(**knobs: object) -> Schedule:
    """A schedule with spec.dispatchGuard on (and agentName, maxWait, scaleToZeroAfter)."""
    return Schedule(guard=True, **knobs)  # type: ignore[arg-type]


@GUARDED_LIMIT
def test_a_burst_beyond_the_warm_headroom_is_rescued_as_workers_come() -> None:
    outcome = held(
        guarded(
            seed=1,
            max_replicas=8,
            arrivals_per_s=((0.0, 0.05), (20.0, 2.0), (24.0, 0.05), (60.0, 0.0)),
            call_s=(20.0, 60.0),
            max_wait_s=40.0,
        )
    )
    assert outcome.seen.get("rescued", 0) >= 3, outcome.seen
    assert any(reason == "DispatchesReissued" for reason, _ in outcome.events), outcome.events


@GUARDED_LIMIT
def test_a_fleet_full_at_max_replicas_rescues_what_it_can_and_gives_up_the_rest() -> None:
    outcome = held(
        guarded(
            seed=2,
            max_replicas=2,
            arrivals_per_s=((0.0, 0.5),),
            call_s=(20.0, 90.0),
            max_wait_s=30.0,
            impatient=0.2,
        )
    )
    rooms = [
        room
        for reason, message in outcome.events
        if reason == "DispatchAbandoned"
        for room in promises.ABANDONED.findall(message)
    ]
    assert rooms, outcome.events
    assert len(set(rooms)) == len(rooms), rooms  # one Event per call given up
    assert outcome.seen.get("rescued", 0) >= 1, outcome.seen


@GUARDED_LIMIT
def test_a_fleet_asleep_at_zero_is_woken_by_the_next_call() -> None:
    outcome = held(
        guarded(
            seed=3,
            min_replicas=0,
            max_replicas=4,
            arrivals_per_s=((0.0, 0.0), (60.0, 0.1), (70.0, 0.0)),
            call_s=(10.0, 20.0),
            scale_to_zero_after_s=20.0,
            duration_s=150.0,
        )
    )
    assert outcome.seen.get("scaled to zero", 0) >= 2, outcome.seen
    assert outcome.seen.get("a call that arrived at zero was served", 0) >= 1, outcome.seen


@GUARDED_LIMIT
def test_a_reissue_a_worker_took_unseen_is_not_issued_again() -> None:
    # found here: LiveKit unreachable through the re-issue's settle time and its worker stalled,
    # the guard read the room as empty (no jobless record, so no participants read) and
    # dispatched it again: two agents
    outcome = held(
        guarded(
            seed=23,
            min_replicas=2,
            max_replicas=3,
            arrivals_per_s=((0.0, 0.4),),
            call_s=(10.0, 40.0),
            max_wait_s=60.0,
            duration_s=40.0,
            faults=(
                Fault(at_s=10.0, kind="livekit_down"),
                Fault(at_s=12.6, kind="stall", value=8.0, target=1),
                Fault(at_s=16.5, kind="livekit_up"),
                Fault(at_s=22.0, kind="livekit_down"),
                Fault(at_s=22.5, kind="stall", value=15.0, target=1),
                Fault(at_s=28.5, kind="livekit_up"),
            ),
        )
    )
    assert outcome.seen.get("rescued", 0) >= 1, outcome.seen


ASLEEP = ((0.0, 0.1), (10.0, 0.0), (85.0, 0.15), (95.0, 0.0))
"""A call or two, an idle fleet that goes to sleep, then a call or two again."""


@GUARDED_LIMIT
def test_a_reissue_too_late_to_land_before_max_wait_is_not_made() -> None:
    # found here: re-issued at maxWait, the dispatch was given up half a second later (a
    # Warning Event saying no worker took it) as a worker took it: served, no rescue counted
    held(
        guarded(
            seed=0,
            interval_s=5.0,
            min_replicas=0,
            max_replicas=3,
            min_available=0,
            arrivals_per_s=((0.0, 0.5),),
            call_s=(20.0, 90.0),
            duration_s=90.0,
        )
    )


@GUARDED_LIMIT
def test_a_fleet_without_warm_headroom_sleeps_only_after_scale_to_zero_after() -> None:
    # found here: with minAvailableWorkers 0, nothing held the last worker: zero at once
    outcome = held(
        guarded(
            seed=0,
            min_replicas=0,
            max_replicas=2,
            min_available=0,
            arrivals_per_s=ASLEEP,
            call_s=(5.0, 25.0),
            max_wait_s=15.0,
            scale_to_zero_after_s=20.0,
            webhooks=False,
        )
    )
    assert outcome.seen.get("scaled to zero", 0) >= 1, outcome.seen


@GUARDED_LIMIT
def test_an_operator_restart_leaves_a_sleeping_fleet_asleep() -> None:
    # found here: a new operator process counted the fleet idle from its start: its warm
    # headroom woke a fleet at zero for scaleToZeroAfter, with no call
    held(
        guarded(
            seed=3890,
            min_replicas=0,
            max_replicas=6,
            recovery=True,
            arrivals_per_s=ASLEEP,
            call_s=(5.0, 25.0),
            scale_to_zero_after_s=30.0,
            webhooks=False,
            impatient=0.2,
            duration_s=90.0,
            faults=(Fault(at_s=84.3, kind="restart", target=1),),
        )
    )


@GUARDED_LIMIT
def test_a_fleet_at_zero_stays_asleep_while_livekit_cannot_be_read() -> None:
    # found here: a room held before LiveKit became unreachable counted as demand round after
    # round: the fleet woke from zero and slept again, over and over, for a room long gone
    held(
        guarded(
            seed=2274,
            interval_s=5.0,
            min_replicas=0,
            max_replicas=3,
            recovery=True,
            arrivals_per_s=ASLEEP,
            call_s=(5.0, 25.0),
            scale_to_zero_after_s=10.0,
            impatient=0.2,
            duration_s=60.0,
            faults=(Fault(at_s=1.5, kind="livekit_down"),),
        )
    )


@GUARDED_LIMIT
def test_a_refused_apply_spends_no_scale_up_step() -> None:
    # found here: every refused scale-up was kept as a scale event: once the API server
    # accepted again, the fleet could not grow for a whole scaleUp period while calls waited
    held(
        guarded(
            seed=190187,
            max_replicas=3,
            min_available=0,
            arrivals_per_s=((0.0, 0.05), (20.0, 2.0), (24.0, 0.05), (60.0, 0.0)),
            call_s=(10.0, 40.0),
            max_wait_s=15.0,
            duration_s=45.0,
            faults=(
                Fault(at_s=1.1, kind="apply_error", value=500.0),
                Fault(at_s=24.9, kind="apply_ok"),
            ),
        )
    )


@GUARDED_LIMIT
def test_calls_given_up_while_the_spec_is_invalid_are_announced() -> None:
    # found here: the guard judged by the last valid spec but its plan was dropped: no
    # DispatchAbandoned Event, no re-issue, no rescue counted, for as long as the edit stood
    outcome = held(
        guarded(
            seed=0,
            max_replicas=1,
            arrivals_per_s=((0.0, 0.5),),
            call_s=(30.0, 90.0),
            max_wait_s=15.0,
            duration_s=65.0,
            faults=(Fault(at_s=10.0, kind="invalid_spec"), Fault(at_s=60.0, kind="valid_spec")),
        )
    )
    assert outcome.seen.get("dispatch abandoned", 0) >= 1, outcome.seen


@GUARDED_LIMIT
def test_one_waiting_dispatch_does_not_grow_an_unreadable_fleet_to_max_replicas() -> None:
    # found here: every worker unreadable, the one dispatch waiting asked for one worker more
    # than the serving ones every round, each new one unreadable too: 1 -> maxReplicas
    held(
        guarded(
            seed=0,
            min_replicas=0,
            max_replicas=3,
            min_available=0,
            arrivals_per_s=ASLEEP,
            call_s=(5.0, 25.0),
            max_wait_s=15.0,
            scale_to_zero_after_s=10.0,
            webhooks=False,
            faults=(Fault(at_s=21.0, kind="unreadable"),),
        )
    )


GUARDED = SCHEDULES // draw.GUARDED_SHARE
"""How many of them run the dispatch guard."""


def drawn(part: int, *, guard: bool) -> Callable[[], None]:
    """One half of the drawn schedules with or without the guard: two tests of each, so that
    `pytest -n 2` runs them side by side, each from its own fixed seed (the same schedules
    every run)."""
    examples = GUARDED if guard else SCHEDULES - GUARDED
    strategy = draw.guarded() if guard else draw.unguarded()
    check = draw.checker(strategy, examples=max(1, examples // 2), seed=part)
    marks = (pytest.mark.timeout(300), pytest.mark.xdist_group(f"drawn-{part}"))
    for mark in marks:  # one half on each worker (--dist loadgroup)
        check = mark(check)
    return check


test_drawn_schedules_keep_every_promise_a = drawn(1, guard=False)
test_drawn_schedules_keep_every_promise_b = drawn(2, guard=False)
test_drawn_guarded_schedules_keep_every_promise_a = drawn(1, guard=True)
test_drawn_guarded_schedules_keep_every_promise_b = drawn(2, guard=True)


def test_a_pod_watch_that_lags_less_than_three_periods_is_not_listed_again() -> None:
    # a bench run listed the pods again about once a second while 1,000 workers scaled up: the
    # rounds the workers' changes started counted as periods, and a lag of seconds was "stale"
    outcome = held(
        Schedule(
            seed=3,
            interval_s=5.0,
            max_replicas=12,
            arrivals_per_s=((0.0, 0.0), (10.0, 1.0), (40.0, 0.0)),
            call_s=(80.0, 90.0),
            duration_s=80.0,
            watch=True,
            faults=(Fault(at_s=0.0, kind="watch_delay", value=4.5),),
        )
    )
    assert outcome.seen.get("a worker's change heard", 0) >= 10, outcome.summary()
    assert len(outcome.grown_at) >= 5, outcome.summary()
    assert outcome.seen.get("pods listed", 0) == 0, outcome.seen


def _scaling_limited(outcome: Outcome) -> dict[str, Any]:
    return next(c for c in outcome.status["conditions"] if c["type"] == "ScalingLimited")


@pytest.mark.parametrize("restart", [False, True], ids=["same-operator", "after-a-restart"])
def test_turning_autoscaling_off_keeps_the_size_the_fleet_has(restart: bool) -> None:
    # the issue: turning autoscaling off applied spec.replicas, the fleet's first size (1),
    # to a fleet the autoscaler had grown for its calls
    faults = [Fault(at_s=25.0, kind="autoscaling_off")]
    if restart:  # the next operator knows the size from the Deployment alone
        faults.append(Fault(at_s=35.0, kind="restart", value=5.0))
    outcome = held(
        Schedule(seed=4, arrivals_per_s=FILL_THEN_EMPTY, call_s=(20.0, 40.0), faults=(*faults,))
    )
    assert outcome.replicas >= 3, outcome.summary()
    assert outcome.status["desiredReplicas"] == outcome.replicas
    assert _scaling_limited(outcome)["reason"] == "AutoscalingDisabled"


def test_a_resize_after_autoscaling_was_turned_off_is_applied_and_one_before_is_not() -> None:
    outcome = held(
        Schedule(
            seed=4,
            arrivals_per_s=FILL_THEN_EMPTY,
            call_s=(20.0, 40.0),
            faults=(
                Fault(at_s=10.0, kind="resize", value=2.0),  # ignored: the autoscaler sizes
                Fault(at_s=25.0, kind="autoscaling_off"),  # keeps the size, not 2
                Fault(at_s=60.0, kind="resize", value=1.0),  # `kubectl scale aw --replicas 1`
            ),
        )
    )
    assert outcome.seen.get("resized by spec.replicas") == 1, outcome.seen
    assert outcome.replicas == 1, outcome.summary()


def test_a_paused_fleet_keeps_its_size_and_resumes_from_it_without_a_jump() -> None:
    # paused while busy: no decision (the world fails any change of the replicas that is not a
    # resize), the calls stay protected; resized to 2 while paused; unpaused with no load: the
    # autoscaler starts from the 2 workers, adds none and removes the idle one after its window
    outcome = held(
        Schedule(
            seed=4,
            arrivals_per_s=((0.0, 0.5), (30.0, 0.0)),
            call_s=(5.0, 15.0),
            faults=(
                Fault(at_s=20.0, kind="pause"),
                Fault(at_s=60.0, kind="resize", value=2.0),
                Fault(at_s=80.0, kind="unpause"),
            ),
        )
    )
    reasons = [reason for reason, _ in outcome.events]
    assert (reasons.count("Paused"), reasons.count("Resumed")) == (1, 1), reasons
    paused, resumed = reasons.index("Paused"), reasons.index("Resumed")
    assert "ScaledUp" in reasons[:paused], reasons  # it had grown: 3 workers
    assert not {"ScaledUp", "ScaledDown"} & set(reasons[paused:resumed]), reasons
    assert outcome.seen.get("resized by spec.replicas") == 1, outcome.seen
    assert all(at < 80.0 for at in outcome.grown_at), outcome.grown_at
    assert outcome.events[resumed + 1 :] == [
        ("ScaledDown", "load 0.00 < target 0.50: 2 -> 1 workers")
    ], outcome.events
    assert _scaling_limited(outcome)["reason"] != "Paused"
