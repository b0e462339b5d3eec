"""The autoscaler: HPA's rules on the reported load, warm headroom, and the busy floor."""

from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentworker_operator import autoscaler, headroom, observation
from agentworker_operator import spec as specs
from agentworker_operator.observation import WorkerState
from tests.unit.operator.workers import fleet, worker

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most

NOW = 10_000.0
FRESH = autoscaler.History()


def scaling(**raw: Any) -> specs.Autoscaling:
    """Autoscaling parsed from a raw `spec.autoscaling` (defaults applied by parse_spec)."""
    spec = specs.parse_spec(
        {
            "image": "agent:1",
            "entrypoint": "agent:main",
            "livekit": {"url": "ws://lk:7880", "credentialsSecret": {"name": "lk"}},
            "autoscaling": {"enabled": True, **raw},
            # minReplicas 0 needs the guard (the spec refuses it otherwise)
            "dispatchGuard": {"enabled": raw.get("minReplicas") == 0},
        }
    )
    return spec.autoscaling


def decide(
    workers: Any, current: int, history: autoscaler.History = FRESH, **raw: Any
) -> autoscaler.ScaleDecision:
    return autoscaler.decide(scaling(**raw), workers, current=current, history=history, now=NOW)


def test_load_above_target_scales_up_at_once_with_the_reason() -> None:
    decision = decide(fleet((0.9, 3), (0.9, 3), (0.9, 3)), current=3)
    assert decision.replicas == 6  # ceil(2.7 / 0.5)
    assert decision.reason == "LoadAboveTarget"
    assert decision.message == "load 0.90 > target 0.50: 3 -> 6 workers"


def test_load_within_ten_percent_of_the_target_changes_nothing() -> None:
    decision = decide(fleet((0.54, 1), (0.54, 1)), current=2)
    assert (decision.replicas, decision.reason) == (2, "Stable")


def test_scale_down_waits_for_the_stabilization_window() -> None:
    history = FRESH.recommended(NOW - 60, 3, keep_s=600)
    decision = decide(fleet((0.05, 0), (0.05, 0), (0.05, 0)), current=3, history=history)
    assert decision.replicas == 3
    assert decision.recommendation == 1


def test_after_the_window_scale_down_removes_step_pods_per_period() -> None:
    history = FRESH.recommended(NOW - 400, 3, keep_s=600)
    decision = decide(fleet((0.05, 0), (0.05, 0), (0.05, 0)), current=3, history=history)
    assert (decision.replicas, decision.reason) == (2, "LoadBelowTarget")
    assert decision.limit is not None
    assert decision.limit.reason == "ScaleDownLimit"


def test_a_scale_down_in_the_period_counts_against_the_step() -> None:
    history = FRESH.recommended(NOW - 400, 3, keep_s=600).scaled(NOW - 30, -1, keep_s=600)
    decision = decide(fleet((0.05, 0), (0.05, 0)), current=2, history=history)
    assert decision.replicas == 2


def test_scale_up_is_limited_by_step_pods_per_period() -> None:
    decision = decide(fleet((1.0, 5), (1.0, 5)), current=2, scaleUp={"stepPods": 1})
    assert decision.replicas == 3
    assert decision.limit is not None
    assert decision.limit.reason == "ScaleUpLimit"


def test_full_workers_get_warm_headroom() -> None:
    workers = fleet((0.75, 4), (0.75, 4))
    decision = decide(workers, current=2, targetLoad=0.7, minAvailableWorkers=2)
    assert (decision.replicas, decision.reason) == (4, "HeadroomLow")
    assert decision.message == "0 of 2 warm workers available: 2 -> 4 workers"


def test_headroom_is_held_at_max_replicas_and_says_so() -> None:
    decision = decide(fleet((0.9, 4), (0.9, 4)), current=2, maxReplicas=3)
    assert decision.replicas == 3
    assert decision.limit is not None
    assert decision.limit.reason == "AtMaxReplicas"


def test_min_replicas_holds_an_idle_fleet() -> None:
    history = FRESH.recommended(NOW - 400, 3, keep_s=600)
    decision = decide(
        fleet((0.0, 0), (0.0, 0), (0.0, 0)),
        current=3,
        history=history,
        minReplicas=3,
    )
    assert decision.replicas == 3
    assert decision.limit is not None
    assert decision.limit.reason == "AtMinReplicas"


def test_wait_for_idle_never_removes_a_busy_worker() -> None:
    history = FRESH.recommended(NOW - 400, 4, keep_s=600)
    workers = fleet((0.1, 1), (0.1, 1), (0.1, 1), (0.0, 0))
    decision = decide(workers, current=4, history=history, scaleDown={"stepPods": 4})
    assert decision.replicas == 3
    assert decision.limit is not None
    assert decision.limit.reason == "BusyWorkers"


def test_pods_the_watch_has_not_shown_are_never_taken_for_pods_yet_to_be_made() -> None:
    # a simulated stale pod watch: the Deployment ran 3 pods, the watch showed 2 (one idle),
    # and the third, busy, was counted as a pod yet to be made, removable at no cost
    history = FRESH.recommended(NOW - 400, 3, keep_s=600)
    workers = [worker("idle", load=0.0, jobs=0), worker("busy", load=0.25, jobs=1)]
    down = {"scaleDown": {"stepPods": 4}, "minAvailableWorkers": 0}
    assert decide(workers, current=3, history=history, **down).removable == 2  # as it was
    decision = autoscaler.decide(
        scaling(**down),
        workers,
        current=3,
        history=history,
        now=NOW,
        demand=autoscaler.Demand(unseen_pods=1),
    )
    # the unseen pod counts as a worker that cannot be read (full, for a scale-down), and only
    # the idle worker is removable
    assert (decision.replicas, decision.removable) == (3, 1)


def test_a_watch_that_shows_few_of_the_pods_holds_the_size() -> None:
    workers = [worker("idle", load=0.0, jobs=0)]
    decision = autoscaler.decide(
        scaling(scaleDown={"stepPods": 4}),
        workers,
        current=4,
        history=FRESH.recommended(NOW - 400, 4, keep_s=600),
        now=NOW,
        demand=autoscaler.Demand(unseen_pods=3),
    )
    assert (decision.replicas, decision.reason) == (4, "WorkersUnreadable")
    assert "3 not shown by the pod watch yet" in decision.message


def test_drain_lets_busy_workers_go() -> None:
    history = FRESH.recommended(NOW - 400, 4, keep_s=600)
    workers = fleet((0.1, 1), (0.1, 1), (0.1, 1), (0.0, 0))
    decision = decide(
        workers, current=4, history=history, scaleDown={"stepPods": 4, "busyWorkers": "Drain"}
    )
    assert decision.replicas == 1


def test_an_unknown_worker_is_never_counted_as_idle() -> None:
    history = FRESH.recommended(NOW - 400, 3, keep_s=600)
    workers = [*fleet((0.0, 0), (0.0, 0)), worker("silent", state=WorkerState.UNKNOWN)]
    decision = decide(workers, current=3, history=history, scaleDown={"stepPods": 3})
    assert decision.replicas == 2  # unknown counts as full: one idle goes, the other is headroom
    assert decision.removable == 2


def test_a_fleet_that_cannot_be_read_holds_its_size_and_says_why() -> None:
    workers = [worker("silent", state=WorkerState.UNKNOWN)]
    decision = decide(workers, current=1, maxReplicas=8)
    assert (decision.replicas, decision.reason) == (1, "WorkersUnreadable")
    assert decision.limit is not None
    assert decision.limit.reason == "WorkersUnreadable"
    assert (
        decision.message
        == "1 of 1 workers cannot be read (silent: timeout): holding 1 workers until they can"
    )


def test_unreadable_workers_never_grow_the_fleet_round_after_round() -> None:
    # each new worker is unreadable too (a wrong port): the old rule added one per round
    workers = [worker("w0", load=0.8, jobs=3), worker("u0", state=WorkerState.UNKNOWN)]
    current = 2
    for _i in range(1, 40):
        current = decide(workers, current=current, maxReplicas=50).replicas
        workers = workers[:1] + [
            worker(f"u{j}", state=WorkerState.UNKNOWN) for j in range(current - 1)
        ]
    assert current == 2


def test_unknown_workers_add_no_more_headroom_than_min_available_workers() -> None:
    workers = [
        *(worker(f"f{i}", load=0.8, jobs=3) for i in range(3)),
        worker("a0", load=0.1, jobs=0),
        worker("a1", load=0.1, jobs=0),
        *(worker(f"u{i}", state=WorkerState.UNKNOWN) for i in range(2)),
    ]
    # 3 full + min(2 unknown, 1) + 1 warm = 5 wanted; the load asks for no more than 7 have
    decision = decide(workers, current=7, targetLoad=0.7, maxReplicas=20)
    assert decision.replicas == 7
    assert decide(workers[:3] + workers[5:] + workers[3:4], current=6, targetLoad=0.7).replicas == 6


def test_pods_the_deployment_has_not_made_yet_count_as_starting() -> None:
    decision = decide([], current=3)
    assert (decision.replicas, decision.reason) == (3, "Stable")


def test_draining_and_terminating_workers_are_not_available() -> None:
    workers = [
        worker("old", load=0.1, jobs=2, terminating=True),
        worker("retired", state=WorkerState.DRAINING),
        worker("w0", load=0.8, jobs=4),
    ]
    decision = decide(workers, current=1, targetLoad=0.7, minAvailableWorkers=2)
    assert (decision.replicas, decision.reason) == (3, "HeadroomLow")
    assert decision.message == "0 of 2 warm workers available: 1 -> 3 workers"


def test_a_victim_the_deployment_removes_that_answers_nothing_is_not_made_again() -> None:
    # the scale-down went 3 -> 2 a moment ago; its idle victim exited at once (its /worker
    # answers nothing: unknown) and the watch has not shown its pod's deletion yet. The e2e
    # fault test saw 2 -> 3 "load 0.25 on 3 workers" here, then the same again 10 s later.
    workers = [
        worker("busy", load=0.5, jobs=2),
        worker("idle", load=0.0, jobs=0),
        worker("victim", state=WorkerState.UNKNOWN),
    ]
    recent = FRESH.recommended(NOW - 1, 2, keep_s=600).scaled(NOW - 1, -1, keep_s=600)
    decision = decide(workers, current=2, history=recent, minReplicas=1)
    assert decision.replicas == 2, decision.message


def test_a_rollouts_surge_asks_for_no_more_workers() -> None:
    # maxSurge: a new pod is up beside the three old ones before one of them goes; the load
    # is on target
    workers = [*fleet((0.6, 2), (0.6, 2), (0.6, 2)), worker("surge", load=0.3, jobs=1)]
    decision = decide(workers, current=3)
    assert decision.replicas == 3, decision.message


def test_a_low_load_on_workers_beyond_the_replicas_asks_for_no_more_than_the_replicas() -> None:
    # found by test_monotone_in_load: 3 workers serve while the Deployment keeps 1 (the others
    # on their way out); at load 0.25 the scale-down count (2) passed the 1 that load 0.5 gave
    low: dict[str, Any] = {"minAvailableWorkers": 0, "maxReplicas": 2}
    quiet = decide(fleet((0.25, 1), (0.25, 1), (0.25, 1)), current=1, **low)
    on_target = decide(fleet((0.5, 1), (0.5, 1), (0.5, 1)), current=1, **low)
    assert quiet.replicas <= on_target.replicas == 1


def test_above_max_replicas_the_fleet_comes_down() -> None:
    decision = decide(fleet((0.5, 1), (0.5, 1), (0.5, 0), (0.5, 0)), current=4, maxReplicas=2)
    assert decision.replicas < 4
    assert decision.reason == "AboveMaxReplicas"


def test_history_keeps_only_what_matters() -> None:
    history = FRESH.recommended(NOW - 700, 5, keep_s=600).recommended(NOW, 3, keep_s=600)
    assert history.recommendations == ((NOW, 3),)


# -- properties ---------------------------------------------------------------------------

loads = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
jobs = st.integers(min_value=0, max_value=8)
states = st.sampled_from([None, None, None, WorkerState.UNKNOWN, WorkerState.STARTING])


@st.composite
def fleets(draw: st.DrawFn) -> list[Any]:
    count = draw(st.integers(min_value=0, max_value=12))
    return [
        worker(f"w{i}", load=draw(loads), jobs=draw(jobs), state=draw(states)) for i in range(count)
    ]


def pods(value: int, period_s: int) -> dict[str, Any]:
    return {"type": "Pods", "value": value, "periodSeconds": period_s}


def percent(value: int, period_s: int) -> dict[str, Any]:
    return {"type": "Percent", "value": value, "periodSeconds": period_s}


POLICY_SETS = [
    [pods(4, 15), percent(100, 15)],
    [percent(10, 60)],
    [percent(50, 5), pods(1, 300)],
    [pods(2, 5)],
]
BEHAVIORS = [
    *({"stepPods": step} for step in (1, 2, 4, 20)),
    *(
        {"policies": policies, "selectPolicy": select}
        for policies in POLICY_SETS
        for select in ("Max", "Min", "Disabled")
    ),
]
"""scaleUp or scaleDown shapes: the shorthand, or policies with each selectPolicy (one draw
each: composing them from many small draws made every property twice as slow)."""
HEADROOMS = [
    *({"minAvailableWorkers": count} for count in range(4)),
    *({"headroom": {unit: count}} for unit in ("workers", "slots") for count in range(4)),
    *({"headroom": {"percent": share}} for share in (0, 10, 25, 50, 90)),
]
"""The warm headroom in each of its spellings."""


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    low = draw(st.integers(min_value=0, max_value=5))
    high = draw(st.integers(min_value=max(low, 1), max_value=15))
    return {
        "minReplicas": low,
        "maxReplicas": high,
        "targetLoad": draw(st.sampled_from([0.3, 0.5, 0.7])),
        **draw(st.sampled_from(HEADROOMS)),
        "scaleUp": dict(draw(st.sampled_from(BEHAVIORS))),
        "scaleDown": {
            **draw(st.sampled_from(BEHAVIORS)),
            "busyWorkers": draw(st.sampled_from(["WaitForIdle", "Drain"])),
            "stabilizationWindow": draw(st.sampled_from(["0s", "60s", "5m"])),
        },
    }


@st.composite
def histories(draw: st.DrawFn) -> autoscaler.History:
    history = FRESH
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        age = draw(st.floats(min_value=0.0, max_value=600.0))
        history = history.recommended(NOW - age, draw(st.integers(0, 15)), keep_s=3600)
    return history


@settings(deadline=None, max_examples=150)
@given(workers=fleets(), config=configs(), history=histories(), current=st.integers(0, 15))
def test_never_outside_min_and_max_when_starting_inside(
    workers: list[Any], config: dict[str, Any], history: autoscaler.History, current: int
) -> None:
    low, high = config["minReplicas"], config["maxReplicas"]
    current = min(max(current, low), high)
    decision = decide(workers, current=current, history=history, **config)
    assert low <= decision.replicas <= high


@settings(deadline=None, max_examples=150)
@given(workers=fleets(), config=configs(), current=st.integers(1, 15))
def test_no_scale_down_inside_the_window(
    workers: list[Any], config: dict[str, Any], current: int
) -> None:
    config["scaleDown"]["stabilizationWindow"] = "5m"
    current = min(max(current, config["minReplicas"]), config["maxReplicas"])
    history = FRESH.recommended(NOW - 299, current, keep_s=3600)
    assert decide(workers, current=current, history=history, **config).replicas >= current


@settings(deadline=None, max_examples=150)
@given(
    count=st.integers(1, 10),
    low_load=loads,
    high_load=loads,
    config=configs(),
    current=st.integers(1, 15),
)
def test_monotone_in_load(
    count: int, low_load: float, high_load: float, config: dict[str, Any], current: int
) -> None:
    low_load, high_load = sorted((low_load, high_load))
    current = min(max(current, config["minReplicas"]), config["maxReplicas"])

    def replicas(load: float) -> int:
        workers = [worker(f"w{i}", load=load, jobs=1) for i in range(count)]
        return decide(workers, current=current, **config).replicas

    assert replicas(low_load) <= replicas(high_load)


@settings(deadline=None, max_examples=150)
@given(workers=fleets(), config=configs(), history=histories(), current=st.integers(0, 15))
def test_wait_for_idle_never_goes_below_the_busy_workers(
    workers: list[Any], config: dict[str, Any], history: autoscaler.History, current: int
) -> None:
    config["scaleDown"]["busyWorkers"] = "WaitForIdle"
    current = min(max(current, config["minReplicas"]), config["maxReplicas"], len(workers))
    busy = sum(1 for w in workers if w.busy and w.state is not WorkerState.STARTING)
    decision = decide(workers, current=current, history=history, **config)
    assert decision.replicas >= min(busy, current)


UNLIMITED_UP = {"policies": [{"type": "Pods", "value": 1000, "periodSeconds": 15}]}


def warm_workers_wanted(config: dict[str, Any], full: int) -> int | None:
    """The warm workers a workers or percent headroom asks for, found by search: for percent
    P the fewest W with W >= P % of (full + W). None for slots."""
    if "minAvailableWorkers" in config:
        return int(config["minAvailableWorkers"])
    (unit, amount), *_ = config["headroom"].items()
    if unit == "workers":
        return int(amount)
    if unit == "percent":
        return next(w for w in range(10_000) if w * 100 >= amount * (full + w))
    return None


@settings(deadline=None, max_examples=150)
@given(workers=fleets(), config=configs(), current=st.integers(0, 15))
def test_warm_headroom_is_restored_when_max_allows(
    workers: list[Any], config: dict[str, Any], current: int
) -> None:
    config["scaleUp"] = UNLIMITED_UP
    current = min(max(current, config["minReplicas"]), config["maxReplicas"])
    by_state = {state: sum(1 for w in workers if w.state is state) for state in WorkerState}
    warm = warm_workers_wanted(config, by_state[WorkerState.FULL])
    decision = decide(workers, current=current, **config)
    if observation.blind(by_state):  # nothing to go by: the size holds
        assert decision.replicas == current
        return
    if warm is None:  # slots: see test_slots_headroom_is_restored_when_max_allows
        return
    unknown_cover = min(by_state[WorkerState.UNKNOWN], warm)
    wanted = by_state[WorkerState.FULL] + unknown_cover + warm
    assert decision.replicas >= min(wanted, config["maxReplicas"])


def decide_with(
    workers: Any,
    current: int,
    demand: autoscaler.Demand,
    history: autoscaler.History = FRESH,
    **raw: Any,
) -> autoscaler.ScaleDecision:
    guarded = specs.parse_spec(
        {
            "image": "agent:1",
            "entrypoint": "agent:main",
            "livekit": {"url": "ws://lk:7880", "credentialsSecret": {"name": "lk"}},
            "autoscaling": {"enabled": True, **raw},
            "dispatchGuard": {"enabled": True},
        }
    ).autoscaling
    return autoscaler.decide(
        guarded, workers, current=current, history=history, now=NOW, demand=demand
    )


def test_a_waiting_dispatch_wakes_a_fleet_at_zero() -> None:
    decision = decide_with([], 0, autoscaler.Demand(waiting=1), minReplicas=0)
    assert (decision.replicas, decision.reason) == (1, "DispatchesWaiting")
    assert decision.message == "1 dispatches wait for a worker: 0 -> 1 workers"


def test_waiting_dispatches_add_the_workers_their_slots_need() -> None:
    full = fleet((0.75, 3), (0.75, 3))
    demand = autoscaler.Demand(waiting=7, free_slots=0, slots_per_worker=3)
    decision = decide_with(full, 2, demand, maxReplicas=10)
    assert (decision.replicas, decision.reason) == (5, "DispatchesWaiting")  # 2 + ceil(7/3)


def test_free_slots_and_starting_workers_cover_waiting_dispatches_first() -> None:
    workers = [
        *fleet((0.25, 1)),
        worker("s0", state=WorkerState.STARTING, ready=False),
    ]
    demand = autoscaler.Demand(waiting=4, free_slots=2, slots_per_worker=2)
    decision = decide_with(workers, 2, demand)
    assert decision.replicas == 2, decision  # 2 free + 2 on the starting worker


def test_waiting_dispatches_are_held_at_max_replicas() -> None:
    demand = autoscaler.Demand(waiting=30, slots_per_worker=1)
    decision = decide_with(fleet((0.75, 3)), 1, demand, maxReplicas=4)
    assert decision.replicas == 4
    assert decision.limit is not None
    assert decision.limit.reason == "AtMaxReplicas"


def test_waiting_dispatches_grow_a_fleet_that_cannot_be_read() -> None:
    workers = [worker("u0", state=WorkerState.UNKNOWN)]
    decision = decide_with(workers, 1, autoscaler.Demand(waiting=3), maxReplicas=2)
    assert (decision.replicas, decision.reason) == (2, "WorkersUnreadable")


def test_an_idle_fleet_reaches_zero_only_after_scale_to_zero_after() -> None:
    history = FRESH.recommended(NOW - 400, 1, keep_s=600)
    idle = fleet((0.0, 0))
    raw = {"minReplicas": 0, "scaleToZeroAfter": "5m"}
    early = decide_with(idle, 1, autoscaler.Demand(idle_s=200), history, **raw)
    assert early.replicas == 1  # the warm headroom holds until then
    late = decide_with(idle, 1, autoscaler.Demand(idle_s=300), history, **raw)
    assert (late.replicas, late.reason) == (0, "IdleToZero")
    assert late.message == "no call and no dispatch for 300s: 1 -> 0 workers"


def test_a_busy_or_waiting_fleet_never_reaches_zero() -> None:
    history = FRESH.recommended(NOW - 400, 1, keep_s=600)
    raw = {"minReplicas": 0, "scaleToZeroAfter": "1m"}
    busy = decide_with(fleet((0.25, 1)), 1, autoscaler.Demand(idle_s=999), history, **raw)
    assert busy.replicas >= 1
    waiting = decide_with([], 0, autoscaler.Demand(waiting=1, idle_s=999), history, **raw)
    assert waiting.replicas == 1


def test_min_replicas_zero_is_refused_without_the_dispatch_guard() -> None:
    raw = {
        "image": "agent:1",
        "entrypoint": "agent:main",
        "livekit": {"url": "ws://lk:7880", "credentialsSecret": {"name": "lk"}},
        "autoscaling": {"enabled": True, "minReplicas": 0},
    }
    with pytest.raises(specs.InvalidSpecError, match="dispatchGuard"):
        specs.parse_spec(raw)


@settings(max_examples=200, deadline=None)
@given(
    waiting=st.integers(0, 50),
    free=st.integers(0, 20),
    per_worker=st.integers(1, 6),
    loads=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 6)), max_size=6),
)
def test_waiting_never_lowers_the_decision_and_never_passes_max(
    waiting: int, free: int, per_worker: int, loads: list[tuple[float, int]]
) -> None:
    workers = fleet(*loads)
    current = len(workers)
    without = decide_with(workers, current, autoscaler.Demand(), maxReplicas=8)
    demand = autoscaler.Demand(waiting=waiting, free_slots=free, slots_per_worker=per_worker)
    with_waiting = decide_with(workers, current, demand, maxReplicas=8)
    assert without.replicas <= with_waiting.replicas <= max(8, current)


# -- warm headroom from a miss-rate target ------------------------------------------------------


def target(free_slots: int, workers: int, *, per_worker: int = 3) -> headroom.WarmHeadroom:
    """What `headroom.derive` would say for a 0.1 % target that asks for `free_slots`."""
    return headroom.WarmHeadroom(
        warm_workers=workers,
        free_slots=free_slots,
        arrival_rate_per_s=0.1,
        reaction_s=65.0,
        miss_rate=0.001,
        slots_per_worker=per_worker,
    )


def test_a_miss_rate_target_adds_the_workers_its_free_slots_need() -> None:
    demand = autoscaler.Demand(free_slots=2, slots_per_worker=3, warm=target(8, 3))
    decision = decide_with(fleet((0.4, 2), (0.4, 2)), 2, demand)
    assert (decision.replicas, decision.reason) == (4, "HeadroomLow")  # 2 + ceil(6 / 3)
    assert decision.message == "2 of 8 free slots for misses <= 0.1 %: 2 -> 4 workers"


def test_the_slots_of_starting_workers_count_toward_a_miss_rate_target() -> None:
    starting = [worker(f"s{i}", state=WorkerState.STARTING, ready=False) for i in range(2)]
    demand = autoscaler.Demand(free_slots=2, slots_per_worker=3, warm=target(8, 3))
    decision = decide_with([*fleet((0.4, 2), (0.4, 2)), *starting], 4, demand)
    assert (decision.replicas, decision.reason) == (4, "Stable")


def test_min_available_workers_stays_the_floor_of_a_miss_rate_target() -> None:
    demand = autoscaler.Demand(free_slots=0, slots_per_worker=3, warm=target(1, 1))
    decision = decide_with(fleet((0.75, 4), (0.75, 4)), 2, demand, minAvailableWorkers=2)
    assert (decision.replicas, decision.reason) == (4, "HeadroomLow")
    assert decision.message == "0 of 2 warm workers available: 2 -> 4 workers"


def test_free_slots_beyond_a_miss_rate_target_let_idle_workers_go() -> None:
    demand = autoscaler.Demand(free_slots=5, slots_per_worker=1, warm=target(2, 2))
    history = FRESH.recommended(NOW - 400, 5, keep_s=600)
    decision = decide_with(fleet(*[(0.0, 0)] * 5), 5, demand, history=history)
    assert decision.recommendation == 2
    assert (decision.replicas, decision.reason) == (4, "LoadBelowTarget")  # one step a period


def test_unreadable_workers_ask_no_more_than_the_warm_workers_of_a_miss_rate_target() -> None:
    demand = autoscaler.Demand(free_slots=6, slots_per_worker=1, warm=target(6, 1))
    readable = fleet(*[(0.0, 0)] * 6)
    unknown = [worker(f"u{i}", state=WorkerState.UNKNOWN) for i in range(2)]
    config: dict[str, Any] = {"minAvailableWorkers": 0, "targetLoad": 0.7}
    assert decide_with(readable, 6, demand, **config).recommendation == 6
    assert decide_with([*readable, *unknown], 8, demand, **config).recommendation == 7


@settings(max_examples=200, deadline=None)
@given(
    workers=fleets(),
    config=configs(),
    current=st.integers(0, 15),
    free=st.integers(0, 20),
    per_worker=st.integers(1, 6),
    slots=st.integers(0, 60),
)
def test_a_miss_rate_target_never_lowers_the_decision_and_never_passes_max(
    workers: list[Any],
    config: dict[str, Any],
    current: int,
    free: int,
    per_worker: int,
    slots: int,
) -> None:
    low, high = config["minReplicas"], config["maxReplicas"]
    current = min(max(current, low), high)
    plain = autoscaler.Demand(free_slots=free, slots_per_worker=per_worker)
    warm = target(slots, min(-(-slots // per_worker), high), per_worker=per_worker)
    without = decide_with(workers, current, plain, **config)
    with_target = decide_with(workers, current, replace(plain, warm=warm), **config)
    assert without.replicas <= with_target.replicas <= high


# -- scaling policies (the HPA's behavior) --------------------------------------------------------


def saturated(count: int) -> list[Any]:
    """`count` workers at load 1.0: full, and the load asks for twice as many (target 0.5)."""
    return fleet(*[(1.0, 2)] * count)


def idle(count: int) -> list[Any]:
    return fleet(*[(0.0, 0)] * count)


LONG_AGO = FRESH.recommended(NOW - 400, 10, keep_s=3600)
"""A recommendation older than the default scale-down window: the window no longer holds."""


def test_a_percent_policy_adds_its_share_of_the_workers_at_the_period_start_rounded_up() -> None:
    quarter = {"policies": [percent(25, 60)]}  # ceil(12.5)
    assert decide(saturated(10), current=10, maxReplicas=100, scaleUp=quarter).replicas == 13
    small = {"policies": [percent(3, 60)]}  # ceil(10.3): a small share still adds one
    assert decide(saturated(10), current=10, maxReplicas=100, scaleUp=small).replicas == 11


def test_a_percent_policy_removes_its_share_of_the_workers_rounded_down() -> None:
    quarter = {"policies": [percent(25, 60)]}  # of the workers at the period's start
    assert decide(idle(10), current=10, history=LONG_AGO, scaleDown=quarter).replicas == 7  # 7.5


@pytest.mark.parametrize(
    ("select", "up", "down"),
    [
        pytest.param("Max", 20, 5, id="max-takes-the-biggest-change"),
        pytest.param("Min", 14, 9, id="min-takes-the-smallest-change"),
    ],
)
def test_select_policy_picks_among_the_policies(select: str, up: int, down: int) -> None:
    both_up = {"policies": [pods(4, 15), percent(100, 15)], "selectPolicy": select}
    both_down = {"policies": [pods(1, 60), percent(50, 60)], "selectPolicy": select}
    assert decide(saturated(10), current=10, maxReplicas=100, scaleUp=both_up).replicas == up
    assert decide(idle(10), current=10, history=LONG_AGO, scaleDown=both_down).replicas == down


def test_select_policy_disabled_forbids_a_scale_up_and_says_so() -> None:
    decision = decide(
        saturated(10), current=10, maxReplicas=100, scaleUp={"selectPolicy": "Disabled"}
    )
    assert decision.replicas == 10
    assert decision.limit == autoscaler.Limit(
        reason="ScaleUpLimit",
        message="20 workers wanted, 10 now: scaleUp.selectPolicy is Disabled",
    )


def test_select_policy_disabled_forbids_a_scale_down() -> None:
    disabled = {"selectPolicy": "Disabled", "policies": [percent(100, 15)]}
    decision = decide(idle(10), current=10, history=LONG_AGO, scaleDown=disabled)
    assert decision.replicas == 10
    assert decision.limit is not None
    assert decision.limit.reason == "ScaleDownLimit"


def test_a_disabled_direction_still_brings_the_fleet_within_min_and_max() -> None:
    # as in the HPA: minReplicas and maxReplicas are no scaling policy
    below = decide(idle(1), current=1, minReplicas=3, scaleUp={"selectPolicy": "Disabled"})
    assert below.replicas == 3
    above = decide(idle(6), current=6, maxReplicas=4, scaleDown={"selectPolicy": "Disabled"})
    assert above.replicas == 4


@pytest.mark.parametrize(
    ("age_s", "replicas"),
    [
        pytest.param(30, 10, id="inside-the-period"),
        pytest.param(60, 20, id="exactly-one-period-old"),
        pytest.param(61, 20, id="older"),
    ],
)
def test_the_changes_made_within_a_policys_period_count_against_it(
    age_s: float, replicas: int
) -> None:
    # 5 -> 10 made age_s ago: within the period the fleet started at 5, and 100 % of 5 is spent
    history = FRESH.scaled(NOW - age_s, 5, keep_s=3600)
    up = {"maxReplicas": 100, "scaleUp": {"policies": [percent(100, 60)]}}
    assert decide(saturated(10), current=10, history=history, **up).replicas == replicas


@pytest.mark.parametrize(("select", "replicas"), [("Max", 14), ("Min", 10)])
def test_each_policy_undoes_only_the_changes_of_its_own_period(select: str, replicas: int) -> None:
    # +4 thirty seconds ago: the 60 s policy started at 6 (6 + 4 = 10), the 10 s one at 10 (14)
    history = FRESH.scaled(NOW - 30, 4, keep_s=3600)
    up = {"policies": [pods(4, 60), pods(4, 10)], "selectPolicy": select}
    decision = decide(saturated(10), current=10, history=history, maxReplicas=100, scaleUp=up)
    assert decision.replicas == replicas


def test_a_scale_down_within_the_period_is_undone_for_a_scale_up_as_in_the_hpa() -> None:
    # 10 -> 8 ten seconds ago: the period began at 10, so 4 per 15 s allows 14 (stepPods once
    # counted only the workers added, and allowed 12)
    history = FRESH.scaled(NOW - 10, -2, keep_s=3600)
    up = {"maxReplicas": 100, "scaleUp": {"stepPods": 4, "period": "15s"}}
    assert decide(saturated(8), current=8, history=history, **up).replicas == 14


def test_a_scale_up_within_the_period_is_undone_for_a_scale_down_as_in_the_hpa() -> None:
    # 10 -> 12 twenty seconds ago: the period began at 10, so 1 per 60 s allows 9
    history = LONG_AGO.scaled(NOW - 20, 2, keep_s=3600)
    down = {"scaleDown": {"stabilizationWindow": "0s", "stepPods": 1}}
    assert decide(idle(12), current=12, history=history, **down).replicas == 9


def test_a_held_scale_up_names_the_policies_that_hold_it() -> None:
    decision = decide(idle(10), current=10, maxReplicas=50, headroom={"workers": 30})
    assert (decision.replicas, decision.recommendation) == (20, 30)
    assert decision.limit == autoscaler.Limit(
        reason="ScaleUpLimit",
        message="30 workers wanted, 20 now: scaleUp adds at most 4 workers per 15s or "
        "100 % per 15s, whichever adds more",
    )


def test_a_held_scale_down_names_its_one_policy() -> None:
    decision = decide(idle(10), current=10, history=LONG_AGO)
    assert decision.limit == autoscaler.Limit(
        reason="ScaleDownLimit",
        message="1 workers wanted, 9 now: scaleDown removes at most 1 workers per 60s",
    )


def test_history_spans_the_longest_policy_period() -> None:
    config = scaling(
        scaleUp={"policies": [pods(4, 15), percent(100, 900)]},
        scaleDown={"stabilizationWindow": "1m"},
    )
    assert autoscaler.history_span_s(config) == 900.0


def ramp_s(*, start: int = 10, goal: int = 100, round_s: float = 5.0, **raw: Any) -> float:
    """Seconds from the first decision until the fleet runs `goal` workers (its maxReplicas),
    deciding every `round_s` (the default sync period) and keeping the history as the sync
    loop does, while the calls would need 10 % more than `goal` workers at the target load
    (so that the HPA's 10 % tolerance does not stop the fleet short of `goal`): each worker
    reports min(1, 1.1 * goal * targetLoad / workers). New workers take their share at once:
    the time a pod takes to start is not in the figure."""
    config = scaling(maxReplicas=goal, **raw)
    keep = autoscaler.history_span_s(config)
    history, current, now = FRESH, start, NOW
    while now - NOW < 3600:
        load = min(1.0, 1.1 * goal * config.target_load / current)
        decision = autoscaler.decide(
            config, fleet(*[(load, 2)] * current), current=current, history=history, now=now
        )
        history = history.recommended(now, decision.recommendation, keep_s=keep)
        if decision.replicas != current:
            history = history.scaled(now, decision.replicas - current, keep_s=keep)
            current = decision.replicas
        if current >= goal:
            return now - NOW
        now += round_s
    raise AssertionError(f"{goal} workers not reached in an hour: {current}")


def test_ten_to_a_hundred_workers_takes_45_s_with_the_default_scale_up() -> None:
    # 10 -> 20 -> 40 -> 80 -> 100, one doubling per 15 s period
    assert ramp_s() == 45.0


def test_ten_to_a_hundred_workers_took_330_s_at_four_workers_per_15_s() -> None:
    # the former default, and still what the shorthand stepPods: 4 (per 15s) does
    assert ramp_s(scaleUp={"stepPods": 4}) == 330.0


REPO = Path(__file__).resolve().parents[3]


def test_the_crd_and_the_docs_state_the_simulated_ramp() -> None:
    new, old = f"{ramp_s():g} s", f"{ramp_s(scaleUp={'stepPods': 4}):g} s"
    crd = " ".join((REPO / "crds" / "agentworker.dev_agentworkers.yaml").read_text().split())
    docs = " ".join((REPO / "docs" / "autoscaling.md").read_text().split())
    assert (
        f"has them within {new} (10, 20, 40, 80, 100; with 4 workers per 15 s it took {old})" in crd
    )
    assert f"10 to 100 workers in {new}" in docs
    assert f"took {old}" in docs


def reference_limit(
    policies: list[tuple[str, int, int]],
    select: str,
    current: int,
    events: list[tuple[float, int]],
    *,
    up: bool,
) -> int:
    """What the HPA's policies allow, written apart from the operator's code with exact
    fractions: per policy the replicas at its period's start, moved by the value or the
    percentage (rounded up for a scale-up, down for a scale-down); Max takes the biggest
    change, Min the smallest."""
    allowed = []
    for kind, value, period_s in policies:
        start = current - sum(delta for when, delta in events if when > NOW - period_s)
        sign = 1 if up else -1
        if kind == "Pods":
            allowed.append(start + sign * value)
        else:
            moved = start * (1 + sign * Fraction(value, 100))
            allowed.append(math.ceil(moved) if up else math.floor(moved))
    biggest = max(allowed) if up else min(allowed)
    smallest = min(allowed) if up else max(allowed)
    return biggest if select == "Max" else smallest


policy_tuples = st.lists(
    st.tuples(st.sampled_from(["Pods", "Percent"]), st.integers(1, 100), st.sampled_from([5, 60])),
    min_size=1,
    max_size=3,
)
scale_events = st.lists(
    st.tuples(st.integers(0, 90).map(lambda age: NOW - age), st.integers(-5, 5)), max_size=4
)


def as_policies(policies: list[tuple[str, int, int]]) -> list[dict[str, Any]]:
    return [{"type": k, "value": v, "periodSeconds": p} for k, v, p in policies]


@settings(deadline=None, max_examples=150)
@given(
    policies=policy_tuples,
    select=st.sampled_from(["Max", "Min"]),
    current=st.integers(1, 30),
    events=scale_events,
)
def test_a_scale_up_goes_as_far_as_its_policies_allow_and_no_further(
    policies: list[tuple[str, int, int]], select: str, current: int, events: list[Any]
) -> None:
    history = autoscaler.History(scale_events=tuple(sorted(events)))
    up = {"policies": as_policies(policies), "selectPolicy": select}
    decision = decide(
        saturated(current), current=current, history=history, maxReplicas=1000, scaleUp=up
    )
    limit = reference_limit(policies, select, current, events, up=True)
    assert decision.replicas == max(current, min(2 * current, limit))


@settings(deadline=None, max_examples=150)
@given(
    policies=policy_tuples.map(lambda ps: [(k, min(v, 100), p) for k, v, p in ps]),
    select=st.sampled_from(["Max", "Min"]),
    current=st.integers(2, 30),
    events=scale_events,
)
def test_a_scale_down_goes_as_far_as_its_policies_allow_and_no_further(
    policies: list[tuple[str, int, int]], select: str, current: int, events: list[Any]
) -> None:
    history = autoscaler.History(
        recommendations=LONG_AGO.recommendations, scale_events=tuple(sorted(events))
    )
    down = {"policies": as_policies(policies), "selectPolicy": select, "stabilizationWindow": "0s"}
    decision = decide(
        idle(current), current=current, history=history, scaleDown=down, maxReplicas=30
    )
    limit = reference_limit(policies, select, current, events, up=False)
    assert decision.replicas == min(current, max(1, limit))  # minReplicas 1 is the load's ask


# -- warm headroom in workers, slots or percent ------------------------------------------------


def test_headroom_workers_is_what_min_available_workers_always_was() -> None:
    workers = fleet((0.75, 4), (0.75, 4))
    old = decide(workers, current=2, targetLoad=0.7, minAvailableWorkers=2)
    new = decide(workers, current=2, targetLoad=0.7, headroom={"workers": 2})
    assert old == new
    assert new.message == "0 of 2 warm workers available: 2 -> 4 workers"


def test_percent_headroom_keeps_that_share_of_the_serving_workers_available() -> None:
    # 10 full workers, 20 %: 3 more (3 of 13 is 23 %; 2 of 12 would be 17 %)
    full = fleet(*[(0.75, 4)] * 10)  # above loadThreshold 0.7, within 10 % of targetLoad 0.7
    decision = decide(full, current=10, maxReplicas=100, targetLoad=0.7, headroom={"percent": 20})
    assert (decision.replicas, decision.reason) == (13, "HeadroomLow")
    assert decision.message == "0 of 3 warm workers available (20 %): 10 -> 13 workers"


def test_an_idle_fleet_needs_no_percent_headroom() -> None:
    decision = decide(idle(3), current=3, history=LONG_AGO, headroom={"percent": 50})
    assert decision.recommendation == 1  # minReplicas: every worker is available anyway


def test_slots_headroom_adds_the_workers_its_free_slots_need() -> None:
    demand = autoscaler.Demand(free_slots=2, slots_per_worker=3)
    decision = decide_with(fleet((0.4, 2), (0.4, 2)), 2, demand, headroom={"slots": 8})
    assert (decision.replicas, decision.reason) == (4, "HeadroomLow")  # 2 + ceil(6 / 3)
    assert decision.message == "2 of 8 free slots available: 2 -> 4 workers"


def test_the_slots_of_starting_workers_count_toward_the_slots_headroom() -> None:
    starting = [worker(f"s{i}", state=WorkerState.STARTING, ready=False) for i in range(2)]
    demand = autoscaler.Demand(free_slots=2, slots_per_worker=3)
    decision = decide_with(
        [*fleet((0.4, 2), (0.4, 2)), *starting], 4, demand, headroom={"slots": 8}
    )
    assert (decision.replicas, decision.reason) == (4, "Stable")
    assert "8 of 8 free slots available" in decision.message


def test_free_slots_beyond_the_slots_headroom_let_idle_workers_go() -> None:
    demand = autoscaler.Demand(free_slots=5, slots_per_worker=1)
    history = FRESH.recommended(NOW - 400, 5, keep_s=600)
    decision = decide_with(idle(5), 5, demand, history=history, headroom={"slots": 2})
    assert decision.recommendation == 2
    assert (decision.replicas, decision.reason) == (4, "LoadBelowTarget")  # one step a period


def test_a_miss_rate_target_above_the_slots_headroom_shows_its_own_slots() -> None:
    demand = autoscaler.Demand(free_slots=2, slots_per_worker=3, warm=target(8, 3))
    decision = decide_with(fleet((0.4, 2), (0.4, 2)), 2, demand, headroom={"slots": 3})
    assert decision.message == "2 of 8 free slots for misses <= 0.1 %: 2 -> 4 workers"


@settings(deadline=None, max_examples=150)
@given(
    workers=fleets(),
    slots=st.integers(0, 12),
    free=st.integers(0, 12),
    per_worker=st.integers(1, 4),
)
def test_slots_headroom_is_restored_when_max_allows(
    workers: list[Any], slots: int, free: int, per_worker: int
) -> None:
    workers = [w for w in workers if w.state is not WorkerState.UNKNOWN]
    current = len(workers)
    starting = sum(1 for w in workers if w.state is WorkerState.STARTING)
    demand = autoscaler.Demand(free_slots=free, slots_per_worker=per_worker)
    config: dict[str, Any] = {
        "maxReplicas": 40,
        "headroom": {"slots": slots},
        "scaleUp": UNLIMITED_UP,
    }
    decision = decide_with(workers, current, demand, **config)
    if decision.replicas < current:  # the load let workers go: the slots were over
        return
    # the free slots, and those of every worker starting or added
    kept = free + (starting + decision.replicas - current) * per_worker
    assert kept >= slots or decision.replicas == 40
