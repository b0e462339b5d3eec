"""Call recovery: which rooms a worker took down with it, and what to do for each."""

from __future__ import annotations

import dataclasses

import pytest

from agentworker_operator import observation, recovery
from agentworker_operator.observation import WorkerState
from tests.unit.operator.workers import worker

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most


def serving(name: str, *rooms: str, worker_id: str = "AW_1") -> observation.Worker:
    w = worker(name, load=0.2, jobs=len(rooms))
    assert w.report is not None
    agents = tuple((room, f"agent-AJ_{room}") for room in rooms)
    report = dataclasses.replace(w.report, rooms=rooms, agents=agents, worker_id=worker_id)
    return dataclasses.replace(w, report=report)


def rooms_of(lost: list[recovery.LostRoom]) -> list[str]:
    return sorted(r.room for r in lost)


def restarted(w: observation.Worker, times: int = 1) -> observation.Worker:
    return dataclasses.replace(w, pod=dataclasses.replace(w.pod, restarts=w.pod.restarts + times))


SILENCE_S = 60.0
T0 = 1000.0


def judge(
    before: list[observation.Worker], after: list[observation.Worker], *, elapsed_s: float = 5.0
) -> list[recovery.LostRoom]:
    """Rooms lost between an observation at T0 and one `elapsed_s` later."""
    seen = recovery.remember({}, before, now=T0, silence_s=SILENCE_S)
    return recovery.lost_rooms(seen, after, now=T0 + elapsed_s, silence_s=SILENCE_S)


def test_a_worker_whose_container_restarted_lost_its_rooms_for_certain() -> None:
    before = [serving("a", "r1", "r2"), serving("b", "r3")]
    after = [restarted(worker("a", state=WorkerState.UNKNOWN)), serving("b", "r3")]
    lost = judge(before, after)
    assert rooms_of(lost) == ["r1", "r2"]
    assert {r.agent_identity for r in lost} == {"agent-AJ_r1", "agent-AJ_r2"}
    assert all(r.proven for r in lost)


def test_a_restarted_worker_that_answers_again_still_lost_its_rooms() -> None:
    after = [restarted(serving("a", worker_id="AW_2"))]
    assert rooms_of(judge([serving("a", "r1")], after)) == ["r1"]


def test_a_pod_that_vanished_without_draining_lost_its_rooms_for_certain() -> None:
    lost = judge([serving("a", "r1"), serving("b", "r2")], [serving("b", "r2")])
    assert [(r.room, r.proven) for r in lost] == [("r1", True)]


@pytest.mark.parametrize("elapsed_s", [1.0, 6.0, 59.0])
def test_a_silent_worker_keeps_its_calls_until_the_silence_timeout(elapsed_s: float) -> None:
    # a stall, a GC pause, a slow /worker: the calls run on in their job processes
    assert (
        judge([serving("a", "r1")], [worker("a", state=WorkerState.UNKNOWN)], elapsed_s=elapsed_s)
        == []
    )


def test_past_the_silence_timeout_a_silent_workers_rooms_are_suspected_not_proven() -> None:
    lost = judge([serving("a", "r1")], [worker("a", state=WorkerState.UNKNOWN)], elapsed_s=60.0)
    assert [(r.room, r.proven) for r in lost] == [("r1", False)]


def test_a_reconnection_with_a_new_worker_id_loses_nothing() -> None:
    # the runtime registers again with a new id; its jobs keep running and it lists them
    assert judge([serving("a", "r1", "r2")], [serving("a", "r1", "r2", worker_id="AW_2")]) == []


def test_a_room_another_worker_reports_is_never_lost() -> None:
    after = [serving("b", "r1")]
    assert judge([serving("a", "r1")], after) == []


def test_silence_is_measured_from_the_last_answer_not_the_first() -> None:
    first = recovery.remember({}, [serving("a", "r1")], now=T0, silence_s=SILENCE_S)
    later = recovery.remember(first, [serving("a", "r1")], now=T0 + 50, silence_s=SILENCE_S)
    silent = [worker("a", state=WorkerState.UNKNOWN)]
    assert recovery.lost_rooms(later, silent, now=T0 + 100, silence_s=SILENCE_S) == []
    kept = recovery.remember(later, silent, now=T0 + 100, silence_s=SILENCE_S)
    assert kept["a"].heard_at == T0 + 50


def test_a_death_is_judged_once() -> None:
    before = recovery.remember({}, [serving("a", "r1")], now=T0, silence_s=SILENCE_S)
    gone: list[observation.Worker] = []
    assert rooms_of(recovery.lost_rooms(before, gone, now=T0 + 5, silence_s=SILENCE_S)) == ["r1"]
    after = recovery.remember(before, gone, now=T0 + 5, silence_s=SILENCE_S)
    assert recovery.lost_rooms(after, gone, now=T0 + 10, silence_s=SILENCE_S) == []


def test_calls_that_ended_normally_are_not_lost() -> None:
    assert judge([serving("a", "r1", "r2")], [serving("a", "r2")]) == []


def test_draining_and_deleted_workers_keep_their_calls_and_are_left_alone() -> None:
    base = serving("a", "r1")
    assert base.report is not None
    report = dataclasses.replace(base.report, draining=True)
    draining = dataclasses.replace(base, state=WorkerState.DRAINING, report=report)
    deleted_now = dataclasses.replace(
        serving("b", "r2"), pod=dataclasses.replace(serving("b").pod, terminating=True)
    )
    assert judge([draining, serving("b", "r2")], [deleted_now]) == []


@pytest.mark.parametrize(
    ("callers", "agents", "available", "expected"),
    [
        pytest.param(1, 0, 1, recovery.Verdict.REDISPATCH, id="caller-alone"),
        pytest.param(1, 1, 1, recovery.Verdict.WAIT, id="agent-still-there"),
        pytest.param(1, 0, 0, recovery.Verdict.WAIT, id="no-worker-to-take-it"),
        pytest.param(0, 0, 1, recovery.Verdict.GIVE_UP, id="caller-left"),
        pytest.param(0, 1, 1, recovery.Verdict.GIVE_UP, id="only-an-agent"),
    ],
)
def test_verdict(callers: int, agents: int, available: int, expected: recovery.Verdict) -> None:
    assert recovery.verdict(callers=callers, agents=agents, available_workers=available) is expected
