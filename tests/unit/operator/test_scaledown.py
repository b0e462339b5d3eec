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


def test_a_worker_retired_in_an_earlier_round_and_idle_is_recycled() -> None:
    workers = [
        worker("fresh", state=WorkerState.DRAINING),
        worker("stale", state=WorkerState.DRAINING),
        worker("leaving", state=WorkerState.DRAINING, terminating=True),
        worker("serving"),
    ]
    stale = scaledown.stale_retirees(workers, {"stale", "leaving", "serving"})
    assert names(stale) == ["stale"]


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
        pytest.param(
            worker("a", annotations={scaledown.DELETION_COST: scaledown.VICTIM_COST}), id="victim"
        ),
    ],
)
def test_no_write_without_a_report_or_for_a_chosen_victim(silent: observation.Worker) -> None:
    assert scaledown.protection_patch(silent) is None


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
