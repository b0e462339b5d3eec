"""Scale-down: which workers go first, and the annotations that keep calls safe."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentworker_operator import observation, scaledown
from agentworker_operator.observation import WorkerState
from tests.unit.operator.workers import worker

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most


def names(workers: list[observation.Worker]) -> list[str]:
    return [w.pod.name for w in workers]


def test_starting_then_retired_then_idle_by_load_never_busy_or_unknown() -> None:
    workers = [
        worker("busy", load=0.2, jobs=1),
        worker("idle-warm", load=0.3),
        worker("idle-cold", load=0.0),
        worker("silent", state=WorkerState.UNKNOWN),
        worker("booting", state=WorkerState.STARTING, ready=False),
        worker("retired", state=WorkerState.DRAINING, ready=False),
        worker("leaving", terminating=True),
    ]
    order = scaledown.victim_order(workers, drain_busy=False)
    assert names(order) == ["booting", "retired", "idle-cold", "idle-warm"]


def test_drain_adds_busy_workers_fewest_calls_first() -> None:
    workers = [worker("three", load=0.2, jobs=3), worker("one", load=0.5, jobs=1)]
    assert names(scaledown.victim_order(workers, drain_busy=True)) == ["one", "three"]


H = scaledown.Handshake


@pytest.mark.parametrize(
    ("candidate", "drain_busy", "expected"),
    [
        pytest.param(worker("a"), False, H.ASK, id="idle-runtime-is-asked"),
        pytest.param(worker("a", retirable=False), False, H.AGREED, id="idle-official-goes"),
        pytest.param(worker("a", jobs=1), False, H.REFUSED, id="busy-waited-for"),
        pytest.param(worker("a", jobs=1), True, H.AGREED, id="busy-drains"),
        pytest.param(worker("a", jobs=1, retirable=False), True, H.AGREED, id="busy-official"),
        pytest.param(worker("a", state=WorkerState.UNKNOWN), True, H.REFUSED, id="unknown"),
        pytest.param(
            worker("a", state=WorkerState.STARTING, ready=False), False, H.AGREED, id="starting"
        ),
        pytest.param(worker("a", state=WorkerState.DRAINING), False, H.AGREED, id="retired"),
    ],
)
def test_how_each_candidate_agrees_to_go(
    candidate: observation.Worker, drain_busy: bool, expected: scaledown.Handshake
) -> None:
    assert scaledown.handshake(candidate, drain_busy=drain_busy) is expected


VICTIM = {scaledown.DELETION_COST: scaledown.VICTIM_COST}


def plan(
    workers: list[observation.Worker], current: int, target: int, **kw: bool
) -> scaledown.ScaleDownPlan:
    return scaledown.plan_scale_down(
        workers,
        current=current,
        target=target,
        drain_busy=kw.get("drain_busy", False),
        rolling_out=kw.get("rolling_out", False),
    )


def test_a_plan_takes_the_idle_workers_in_order_and_asks_nobody_yet() -> None:
    workers = [worker("busy", load=0.5, jobs=2), worker("b", load=0.2), worker("a", load=0.1)]
    planned = plan(workers, current=3, target=2)
    assert (planned.unmade, planned.wanted, planned.blocked) == (0, 1, None)
    assert names(list(planned.candidates)) == ["a", "b"]


def test_replicas_the_deployment_never_made_go_first_and_need_no_handshake() -> None:
    # quota let 3 of 5 pods exist: 5 -> 4 and 5 -> 3 remove no worker
    workers = [worker("a"), worker("b"), worker("c")]
    assert (plan(workers, current=5, target=4).unmade, plan(workers, 5, 4).wanted) == (1, 0)
    assert (plan(workers, current=5, target=3).unmade, plan(workers, 5, 3).wanted) == (2, 0)
    assert (plan(workers, current=5, target=2).unmade, plan(workers, 5, 2).wanted) == (2, 1)


def test_a_not_ready_worker_that_is_no_candidate_blocks_before_anyone_is_asked() -> None:
    reconnecting = worker("r", load=0.9, jobs=3, ready=False, state=WorkerState.FULL)
    planned = plan([worker("a"), worker("b"), reconnecting], current=3, target=2)
    assert planned.blocked is not None
    assert planned.blocked[0] == "WorkersNotReady"
    assert "r not ready" in planned.blocked[1]


def test_pods_the_watch_has_not_shown_are_no_unmade_replicas_and_hold_the_scale_down() -> None:
    # the Deployment made 4 pods, the watch shows 3: 5 -> 4 lowers an unmade replica only, and
    # 5 -> 3 would remove a pod the operator cannot judge (busy? not ready?): it waits
    workers = [worker("a"), worker("b"), worker("c")]
    unmade = scaledown.plan_scale_down(
        workers, current=5, target=4, drain_busy=False, rolling_out=False, unseen=1
    )
    assert (unmade.unmade, unmade.wanted, unmade.blocked) == (1, 0, None)
    held = scaledown.plan_scale_down(
        workers, current=5, target=3, drain_busy=False, rolling_out=False, unseen=1
    )
    assert (held.unmade, held.wanted) == (1, 1)
    assert held.blocked is not None
    assert held.blocked[0] == "PodsNotSeen"
    # before it counted unseen pods, both replicas were "unmade" and nothing was asked
    assert plan(workers, current=5, target=3).unmade == 2


def test_during_a_rollout_only_unmade_replicas_go() -> None:
    workers = [worker("old", template_hash="1"), worker("new", template_hash="2")]
    planned = plan(workers, current=3, target=1, rolling_out=True)
    assert planned.unmade == 1
    assert planned.blocked is not None
    assert planned.blocked[0] == "RolloutInProgress"


def test_retirements_no_scale_down_needs_are_withdrawn() -> None:
    workers = [
        worker("chosen", retired=True, annotations=VICTIM),
        worker("left-over", retired=True),
        worker("leaving", retired=True, terminating=True),
        worker("serving"),
    ]
    # 3 members, 2 replicas: the ReplicaSet removes one retiree, the victim; the other serves
    assert names(scaledown.retirements_to_withdraw(workers, replicas=2)) == ["left-over"]
    assert names(scaledown.retirements_to_withdraw(workers, replicas=3)) == ["chosen", "left-over"]
    assert scaledown.retirements_to_withdraw(workers, replicas=1) == []


def test_this_rounds_victims_are_never_withdrawn() -> None:
    workers = [worker("a", retired=True), worker("b")]
    assert scaledown.retirements_to_withdraw(workers, replicas=2, keep={"a"}) == []


def test_a_worker_draining_on_sigterm_is_not_withdrawn() -> None:
    workers = [worker("a", state=WorkerState.DRAINING), worker("b")]
    assert scaledown.retirements_to_withdraw(workers, replicas=2) == []


def test_a_not_ready_pod_that_is_no_victim_blocks_the_scale_down() -> None:
    workers = [worker("a"), worker("stuck", state=WorkerState.UNKNOWN, ready=False)]
    assert scaledown.blocking_pods(workers, [workers[0]]) == ["stuck"]
    assert scaledown.blocking_pods(workers, workers) == []


def test_a_worker_turning_busy_gets_protection_once() -> None:
    busy = worker("a", jobs=2)
    patch = scaledown.protection_patch(busy)
    assert patch == {
        scaledown.DO_NOT_DISRUPT: "true",
        scaledown.SAFE_TO_EVICT: "false",
        scaledown.DELETION_COST: "2",
    }
    again = worker("a", jobs=3, annotations={k: v for k, v in patch.items() if v is not None})
    assert scaledown.protection_patch(again) is None, "no write on every observation"


def test_right_before_a_scale_down_the_cost_is_the_exact_call_count() -> None:
    busy = worker(
        "a",
        jobs=3,
        annotations={
            scaledown.DO_NOT_DISRUPT: "true",
            scaledown.SAFE_TO_EVICT: "false",
            scaledown.DELETION_COST: "1",
        },
    )
    assert scaledown.protection_patch(busy, exact_cost=True) == {scaledown.DELETION_COST: "3"}


def test_a_worker_turning_idle_loses_its_protection() -> None:
    idle = worker(
        "a",
        annotations={scaledown.DO_NOT_DISRUPT: "true", scaledown.DELETION_COST: "4"},
    )
    assert scaledown.protection_patch(idle) == {
        scaledown.DO_NOT_DISRUPT: None,
        scaledown.DELETION_COST: None,
    }


@pytest.mark.parametrize(
    "silent",
    [
        pytest.param(worker("a", state=WorkerState.UNKNOWN), id="unknown"),
        pytest.param(worker("a", state=WorkerState.STARTING, ready=False), id="starting"),
        pytest.param(worker("a", jobs=1, terminating=True), id="terminating"),
        pytest.param(worker("a", retired=True, annotations=VICTIM), id="retired-victim"),
        pytest.param(
            worker("a", state=WorkerState.DRAINING, annotations=VICTIM), id="draining-victim"
        ),
    ],
)
def test_no_write_without_a_report_or_for_a_victim_on_its_way_out(
    silent: observation.Worker,
) -> None:
    assert scaledown.protection_patch(silent) is None


def test_a_victim_that_serves_again_loses_the_lowest_cost() -> None:
    # its retirement expired (the operator was down): an idle worker like any other
    patch = scaledown.protection_patch(worker("a", annotations=VICTIM))
    assert patch == {scaledown.DELETION_COST: None}


def test_a_victim_that_took_calls_again_is_protected_again() -> None:
    patch = scaledown.protection_patch(worker("a", jobs=2, annotations=VICTIM))
    assert patch == {
        scaledown.DO_NOT_DISRUPT: "true",
        scaledown.SAFE_TO_EVICT: "false",
        scaledown.DELETION_COST: "2",
    }


def test_keys_the_user_sets_are_left_alone() -> None:
    user = frozenset({scaledown.DO_NOT_DISRUPT})
    patch = scaledown.protection_patch(worker("a", jobs=1), user_keys=user)
    assert patch is not None
    assert scaledown.DO_NOT_DISRUPT not in patch


def test_a_victim_gets_the_lowest_cost() -> None:
    assert scaledown.victim_patch(worker("a")) == {scaledown.DELETION_COST: "-2147483648"}


@settings(deadline=None, max_examples=200)
@given(
    fleet=st.lists(
        st.tuples(st.integers(0, 4), st.sampled_from([None, None, WorkerState.UNKNOWN])),
        max_size=12,
    ),
    wanted=st.integers(0, 12),
)
def test_never_a_busy_victim_while_an_idle_one_is_left(
    fleet: list[tuple[int, WorkerState | None]], wanted: int
) -> None:
    workers = [worker(f"w{i}", jobs=jobs, state=state) for i, (jobs, state) in enumerate(fleet)]
    chosen = scaledown.victim_order(workers, drain_busy=True)[:wanted]
    left_idle = [w for w in workers if w not in chosen and not w.busy]
    assert not (any(w.busy for w in chosen) and left_idle)
    assert all(w.state is not WorkerState.UNKNOWN for w in chosen)
