"""State: the wrapped worker's facts in the runtime's words, and what it may agree to."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import agentworker_companion
from agentworker_companion import state
from agentworker_operator import observation
from worker_runtime import http_api

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most

JOB = state.Job(id="AJ_1", room="call-1", identity="agent-AJ_1", started_at=1700000000.5)


def facts(**changes: Any) -> state.Facts:
    """A registered, idle worker with room for jobs; `changes` as dataclasses.replace takes."""
    base = state.Facts(
        running=True,
        registered=True,
        closed=False,
        drain_requested=False,
        retired=False,
        load=0.25,
        effective_load=0.25,
        load_threshold=0.7,
        jobs=(),
        on_the_way=0,
        idle_processes=2,
        worker_id="AW_1",
        agent_name="support",
        worker_type="JT_ROOM",
        sdk_version="1.8.9",
        protocol_version=1,
    )
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, "available"),
        ({"effective_load": 0.69}, "available"),
        ({"effective_load": 0.7}, "full"),
        ({"load": 0.1, "effective_load": 0.9}, "full"),
        ({"load_threshold": float("inf"), "effective_load": 50.0}, "available"),
        ({"registered": False}, "starting"),
        ({"running": False, "registered": False, "closed": True}, "starting"),
        ({"retired": True}, "retired"),
        ({"retired": True, "registered": False}, "retired"),
        ({"drain_requested": True}, "draining"),
        ({"drain_requested": True, "retired": True}, "draining"),
        ({"closed": True}, "closed"),
        ({"closed": True, "drain_requested": True}, "closed"),
    ],
    ids=[
        "idle",
        "just-below-the-threshold",
        "at-the-threshold",
        "jobs-on-the-way-count",
        "dev-mode-never-full",
        "not-registered",
        "before-run-livekit-agents-says-closed",
        "retired",
        "retired-while-reconnecting",
        "draining",
        "draining-beats-retired",
        "closed",
        "closed-beats-draining",
    ],
)
def test_worker_state(changes: dict[str, Any], expected: str) -> None:
    assert state.worker_state(facts(**changes)) == expected


@pytest.mark.parametrize(
    ("changes", "ready"),
    [
        ({}, True),
        ({"effective_load": 0.9}, True),
        ({"registered": False}, False),
        ({"retired": True}, False),
        ({"drain_requested": True}, False),
        ({"closed": True}, False),
    ],
    ids=["available", "full-stays-ready", "starting", "retired", "draining", "closed"],
)
def test_ready_means_registered_and_not_draining(changes: dict[str, Any], ready: bool) -> None:
    assert state.is_ready(facts(**changes)) is ready


@pytest.mark.parametrize(
    ("changes", "refusal"),
    [
        ({}, ""),
        ({"registered": False}, ""),
        ({"effective_load": 0.9}, ""),
        ({"retired": True}, ""),
        ({"drain_requested": True}, ""),
        ({"jobs": (JOB,)}, "busy"),
        ({"on_the_way": 1}, "busy"),
        ({"jobs": (JOB,), "closed": True}, "busy"),
        ({"closed": True}, "closed"),
    ],
    ids=[
        "idle",
        "starting",
        "full-without-jobs",
        "retired-already",
        "draining-already",
        "a-job-runs",
        "a-job-is-on-its-way",
        "busy-before-closed",
        "closed",
    ],
)
def test_retiring_is_refused_while_a_job_runs_or_is_on_its_way(
    changes: dict[str, Any], refusal: str
) -> None:
    assert state.retire_refusal(facts(**changes)) == refusal


@pytest.mark.parametrize(
    ("changes", "refusal"),
    [
        ({"retired": True}, ""),
        ({}, ""),
        ({"drain_requested": True, "retired": True}, "draining"),
        ({"closed": True, "retired": True}, "closed"),
    ],
    ids=["retired", "not-retired", "draining-stays-out", "closed-stays-out"],
)
def test_a_retirement_is_withdrawn_unless_the_worker_drains_or_closed(
    changes: dict[str, Any], refusal: str
) -> None:
    assert state.unretire_refusal(facts(**changes)) == refusal


def test_the_worker_document_has_every_name_of_the_runtimes_and_the_companions_version() -> None:
    runtime = http_api.worker_document(
        http_api.WorkerSnapshot(
            worker_id="AW_1",
            state="available",
            ready=True,
            draining=False,
            agent_name="support",
            worker_type="JT_ROOM",
            load=0.25,
            load_threshold=0.7,
            jobs=(),
            idle_processes=2,
            retired=False,
            sdk_version="0.1.0",
            protocol_version=1,
        )
    )
    doc = state.worker_document(facts(jobs=(JOB,)))
    assert set(runtime) <= set(doc)
    assert doc["companion"] == agentworker_companion.__version__
    assert (doc["state"], doc["active_jobs"], doc["worker_id"]) == ("available", 1, "AW_1")
    assert doc["jobs"] == [
        {"id": "AJ_1", "room": "call-1", "identity": "agent-AJ_1", "started_at": 1700000000.5}
    ]
    json.dumps(doc, allow_nan=False)


def test_an_infinite_threshold_is_null_and_an_unregistered_worker_has_no_id() -> None:
    doc = state.worker_document(facts(load_threshold=float("inf"), registered=False))
    assert (doc["load_threshold"], doc["worker_id"]) == (None, "")
    json.dumps(doc, allow_nan=False)


@pytest.mark.parametrize(
    ("changes", "draining", "retired"),
    [
        ({}, False, False),
        ({"retired": True}, False, True),
        ({"drain_requested": True, "retired": True}, True, False),
        ({"closed": True}, True, False),
    ],
    ids=["available", "retired", "draining", "closed"],
)
def test_the_document_says_draining_and_retired_as_the_runtime_does(
    changes: dict[str, Any], draining: bool, retired: bool
) -> None:
    doc = state.worker_document(facts(**changes))
    assert (doc["draining"], doc["retired"]) == (draining, retired)


@pytest.mark.parametrize(
    ("changes", "draining", "retired"),
    [({}, False, False), ({"retired": True}, True, True), ({"drain_requested": True}, True, False)],
    ids=["available", "retired", "draining"],
)
def test_the_operator_reads_the_document_as_a_retirable_worker_with_its_rooms(
    changes: dict[str, Any], draining: bool, retired: bool
) -> None:
    report = observation.parse_worker_document(state.worker_document(facts(jobs=(JOB,), **changes)))
    assert report.companion == agentworker_companion.__version__
    assert report.retirable
    assert report.agents == (("call-1", "agent-AJ_1"),)
    assert (report.draining, report.retired) == (draining, retired)
    assert (report.sdk_version, report.project_type) == ("1.8.9", "python")


@pytest.mark.parametrize(
    "changes",
    [
        {"effective_load": 0.9},
        {"registered": False},
        {"retired": True},
        {"drain_requested": True},
        {"closed": True},
        {"jobs": (JOB,)},
        {"idle_processes": 3},
        {"load_threshold": 0.9},
        {"worker_id": "AW_2"},
        {"load_jobs": 1},
    ],
    ids=[
        "full",
        "reconnecting",
        "retired",
        "draining",
        "closed",
        "a-job-started",
        "idle-processes",
        "threshold",
        "new-id",
        "the-load-counts-a-new-job",
    ],
)
def test_what_the_operator_decides_on_changes_the_decision_view(changes: dict[str, Any]) -> None:
    assert state.decision_view(facts(**changes)) != state.decision_view(facts())


@pytest.mark.parametrize(
    "changes",
    [
        {"load": 0.6, "effective_load": 0.6},
        {"load": 0.0, "effective_load": 0.1},
        {"on_the_way": 1},
        {"healthy": False},
        {"jobs": (JOB,), "worker_id": "AW_1"},
    ],
    ids=["load-rises", "load-falls", "a-job-on-its-way", "unhealthy", "same-job-again"],
)
def test_the_load_alone_leaves_the_decision_view_as_it_was(changes: dict[str, Any]) -> None:
    before = facts(jobs=changes.get("jobs", ()))
    assert state.decision_view(facts(**changes)) == state.decision_view(before)


def test_a_worker_id_counts_only_once_registered() -> None:
    unregistered = facts(registered=False)
    assert state.decision_view(unregistered) == state.decision_view(
        dataclasses.replace(unregistered, worker_id="unregistered")
    )


FACTS = st.builds(
    state.Facts,
    running=st.booleans(),
    registered=st.booleans(),
    closed=st.booleans(),
    drain_requested=st.booleans(),
    retired=st.booleans(),
    load=st.floats(0, 1),
    effective_load=st.floats(0, 2),
    load_threshold=st.floats(0, 1) | st.just(float("inf")),
    jobs=st.lists(st.just(JOB), max_size=2).map(tuple),
    on_the_way=st.integers(0, 2),
    idle_processes=st.integers(0, 3),
    worker_id=st.just("AW_1"),
    agent_name=st.just(""),
    worker_type=st.just("JT_ROOM"),
    sdk_version=st.just("1.8.9"),
    protocol_version=st.just(1),
)


@pytest.mark.timeout(10)  # a property test: many examples, on a shared machine
@settings(max_examples=300, deadline=None)
@given(FACTS)
def test_a_worker_that_agrees_to_retire_holds_no_job_and_none_on_its_way(f: state.Facts) -> None:
    if state.retire_refusal(f) == "":
        assert not f.jobs
        assert f.on_the_way == 0
    if state.is_ready(f):
        assert f.registered
        assert not f.retired
        assert not f.drain_requested
    json.dumps(state.worker_document(f), allow_nan=False)
