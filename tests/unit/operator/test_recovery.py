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


def test_a_worker_that_restarted_lost_its_rooms() -> None:
    before = [serving("a", "r1", "r2"), serving("b", "r3")]
    after = [serving("a", worker_id="AW_2"), serving("b", "r3")]
    lost = recovery.lost_rooms(before, after)
    assert rooms_of(lost) == ["r1", "r2"]
    assert {r.agent_identity for r in lost} == {"agent-AJ_r1", "agent-AJ_r2"}


def test_a_worker_whose_pod_vanished_or_went_silent_is_suspected() -> None:
    before = [serving("a", "r1"), serving("b", "r2")]
    after = [worker("b", state=WorkerState.UNKNOWN)]
    assert rooms_of(recovery.lost_rooms(before, after)) == ["r1", "r2"]


def test_calls_that_ended_normally_are_not_lost() -> None:
    before = [serving("a", "r1", "r2")]
    after = [serving("a", "r2")]
    assert recovery.lost_rooms(before, after) == []


def test_draining_and_deleted_workers_keep_their_calls_and_are_left_alone() -> None:
    draining = dataclasses.replace(serving("a", "r1"), state=WorkerState.DRAINING)
    deleted_now = dataclasses.replace(
        serving("b", "r2"), pod=dataclasses.replace(serving("b").pod, terminating=True)
    )
    before = [draining, serving("b", "r2")]
    assert recovery.lost_rooms(before, [deleted_now]) == []


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
