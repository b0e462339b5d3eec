"""Observation: both /worker dialects, the state each worker counts in, the fleet summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentworker_operator import builders, observation
from agentworker_operator.observation import WorkerState
from worker_runtime import http_api

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most

DATA = Path(__file__).resolve().parent / "data"


def ours(**overrides: Any) -> dict[str, object]:
    """This runtime's /worker document, made by the runtime's own code."""
    values: dict[str, Any] = {
        "worker_id": "AW_1",
        "state": "available",
        "ready": True,
        "draining": False,
        "agent_name": "a",
        "worker_type": "JT_ROOM",
        "load": 0.25,
        "load_threshold": 0.7,
        "jobs": (http_api.JobSummary(id="AJ_1", room="room-1", started_at=1.0),),
        "idle_processes": 1,
        "retired": False,
        "sdk_version": "0.1.0",
        "protocol_version": 1,
    }
    values.update(overrides)
    return http_api.worker_document(http_api.WorkerSnapshot(**values))


def pod(name: str = "p", *, ready: bool = True, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "annotations": {builders.TEMPLATE_HASH_ANNOTATION: "h1"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-29T10:00:00Z"
    return {
        "metadata": meta,
        "status": {
            "podIP": "127.0.1.2",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_this_runtimes_document_gives_load_jobs_rooms_and_the_handshake() -> None:
    report = observation.parse_worker_document(ours())
    assert (report.load, report.active_jobs, report.rooms) == (0.25, 1, ("room-1",))
    assert report.retirable
    assert report.registered
    assert not report.draining
    assert report.worker_id == "AW_1"


@pytest.mark.parametrize("name", ["idle", "busy"])
def test_a_document_captured_from_livekit_agents_parses(name: str) -> None:
    raw = json.loads((DATA / f"livekit_agents_1.8.9_worker_{name}.json").read_text())
    report = observation.parse_worker_document(raw)
    # protobuf's MessageToJson leaves out zero fields: the idle document has no active_jobs
    assert report.active_jobs == raw.get("active_jobs", 0)
    assert report.load == pytest.approx(raw.get("worker_load", 0))
    assert not report.retirable, "the official worker has no POST /retire"
    assert report.registered is None
    assert report.job_ids is None, "it lists no jobs: their starts are its count's rises"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        pytest.param([], "not an object", id="list"),
        pytest.param({}, "worker_type", id="empty"),
        pytest.param({"worker_load": 0.1, "active_jobs": 1}, "worker_type", id="no-type"),
        pytest.param({"worker_type": "JT_ROOM", "worker_load": "high"}, "worker_load", id="text"),
        pytest.param({"worker_type": "JT_ROOM", "active_jobs": -1}, "not a count", id="negative"),
        pytest.param({"worker_type": "JT_ROOM", "active_jobs": 1.5}, "not a count", id="fraction"),
        pytest.param({"worker_type": "JT_ROOM", "worker_load": True}, "worker_load", id="bool"),
        pytest.param(
            {"worker_type": "JT_ROOM", "worker_load": float("nan")}, "worker_load", id="nan"
        ),
    ],
)
def test_garbage_is_not_a_report(raw: object, why: str) -> None:
    with pytest.raises(observation.InvalidReport, match=why):
        observation.parse_worker_document(raw)


@pytest.mark.parametrize(
    ("pod_", "document", "error", "state"),
    [
        pytest.param(pod(), ours(), "", WorkerState.AVAILABLE, id="available"),
        pytest.param(pod(), ours(load=0.9, state="full"), "", WorkerState.FULL, id="full"),
        # found on the rig: a worker full on the offers it holds still reported the load of
        # its last reading (0.5 < 0.7), and the operator took it for available until the load
        # caught up; a long poll heard it full and the fleet did not grow
        pytest.param(
            pod(), ours(load=0.5, state="full"), "", WorkerState.FULL, id="full-on-its-offers"
        ),
        pytest.param(
            pod(ready=False), ours(state="draining", draining=True), "", WorkerState.DRAINING,
            id="draining",
        ),
        pytest.param(
            pod(ready=False), ours(state="draining", retired=True, draining=True), "",
            WorkerState.DRAINING, id="retired",
        ),
        pytest.param(pod(deleting=True), ours(), "", WorkerState.DRAINING, id="terminating"),
        pytest.param(pod(deleting=True), None, "timeout", WorkerState.DRAINING, id="gone"),
        pytest.param(pod(), None, "timeout", WorkerState.UNKNOWN, id="silent"),
        pytest.param(pod(), {"hello": 1}, "", WorkerState.UNKNOWN, id="garbage"),
        pytest.param(pod(ready=False), None, "refused", WorkerState.STARTING, id="booting"),
        pytest.param(
            pod(ready=False), ours(state="starting", jobs=()), "", WorkerState.STARTING,
            id="registering",
        ),
        pytest.param(
            pod(ready=False), ours(state="starting"), "", WorkerState.FULL,
            id="reconnecting-with-a-call",
        ),
        pytest.param(
            pod(), {"worker_type": "JT_ROOM", "worker_load": 0.9, "active_jobs": 2.0}, "",
            WorkerState.FULL, id="official-full",
        ),
        pytest.param(
            pod(ready=False), {"worker_type": "JT_ROOM"}, "", WorkerState.STARTING,
            id="official-not-ready",
        ),
    ],
)  # fmt: skip
def test_each_worker_counts_in_one_state(
    pod_: dict[str, Any], document: object, error: str, state: WorkerState
) -> None:
    worker = observation.observe(pod_, document, error, load_threshold=0.7)
    assert worker.state is state


def test_a_worker_that_reported_before_and_went_silent_is_unknown_even_when_not_ready() -> None:
    worker = observation.observe(
        pod(ready=False), None, "timeout", load_threshold=0.7, reported_before=True
    )
    assert worker.state is WorkerState.UNKNOWN


def test_a_silent_worker_is_busy_never_idle() -> None:
    worker = observation.observe(pod(), None, "timeout", load_threshold=0.7)
    assert worker.busy
    assert worker.error == "timeout"


def test_garbage_says_why_in_the_error() -> None:
    worker = observation.observe(pod(), {"hello": 1}, "", load_threshold=0.7)
    assert worker.error.startswith("not a worker document")


def test_summary_counts_states_jobs_load_and_old_calls() -> None:
    workers = [
        observation.observe(pod("a"), ours(load=0.2), "", load_threshold=0.7),
        observation.observe(pod("b"), ours(load=0.9, state="full"), "", load_threshold=0.7),
        observation.observe(pod("c"), None, "timeout", load_threshold=0.7),
        observation.observe(pod("d", deleting=True), ours(), "", load_threshold=0.7),
    ]
    summary = observation.summarize(workers, template_hash="h2")
    assert summary.by_state[WorkerState.AVAILABLE] == 1
    assert summary.by_state[WorkerState.FULL] == 1
    assert summary.by_state[WorkerState.UNKNOWN] == 1
    assert summary.by_state[WorkerState.DRAINING] == 1
    assert summary.active_jobs == 3
    assert summary.load == pytest.approx(0.55)
    assert summary.unknown_pods == ("c",)
    assert summary.old_worker_jobs == 3, "every pod runs template h1, the current one is h2"


def test_a_retired_worker_says_so_and_a_draining_one_does_not() -> None:
    retired = observation.parse_worker_document(ours(retired=True, state="retired"))
    draining = observation.parse_worker_document(ours(draining=True, state="draining"))
    assert (retired.retired, retired.draining) == (True, True)
    assert (draining.retired, draining.draining) == (False, True)


def test_container_restarts_are_summed_from_the_pod() -> None:
    raw = pod()
    raw["status"]["containerStatuses"] = [{"restartCount": 2}, {"restartCount": 1}, {}]
    assert observation.pod_view(raw).restarts == 3


@pytest.mark.parametrize(
    ("available", "full", "unknown", "blind"),
    [
        pytest.param(0, 0, 1, True, id="the-only-worker-silent"),
        pytest.param(1, 1, 2, True, id="half-silent"),
        pytest.param(2, 1, 2, False, id="most-answer"),
        pytest.param(0, 0, 0, False, id="no-worker"),
    ],
)
def test_blind_when_silent_workers_are_as_many_as_serving_ones(
    available: int, full: int, unknown: int, blind: bool
) -> None:
    counts = {
        WorkerState.AVAILABLE: available,
        WorkerState.FULL: full,
        WorkerState.UNKNOWN: unknown,
    }
    assert observation.blind(counts) is blind


def test_the_summary_names_each_unreadable_pod_and_why() -> None:
    silent = observation.observe(pod("s"), None, "HTTP 404", load_threshold=0.7)
    nonsense = observation.observe(pod("n"), {"a": 1}, "", load_threshold=0.7)
    summary = observation.summarize([silent, nonsense], template_hash="h1")
    assert summary.unreadable == (
        ("n", "not a worker document: it has no worker_type"),
        ("s", "HTTP 404"),
    )
    assert summary.blind


def deployment(replicas: int, *, generation: int = 2, observed: int = 2) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "status": {"observedGeneration": observed, "replicas": replicas},
    }


@pytest.mark.parametrize(
    ("pods", "made", "observed", "disagree"),
    [
        pytest.param(["a", "b"], 2, 2, False, id="agree"),
        pytest.param(["a"], 2, 2, True, id="a-pod-missing"),
        pytest.param(["a", "b", "c"], 2, 2, True, id="a-pod-too-many"),
        pytest.param(["a"], 2, 1, False, id="controller-behind"),
    ],
)
def test_the_pod_watch_disagrees_with_the_deployment(
    pods: list[str], made: int, observed: int, disagree: bool
) -> None:
    watched = [pod(name) for name in pods] + [pod("leaving", deleting=True)]
    assert observation.pods_disagree(watched, deployment(made, observed=observed)) is disagree
    assert observation.pods_disagree(watched, None) is False


@pytest.mark.parametrize(
    ("pods", "made", "observed", "unseen"),
    [
        pytest.param(["a", "b"], 2, 2, 0, id="agree"),
        pytest.param(["a"], 3, 2, 2, id="two-not-shown"),
        pytest.param(["a", "b", "c"], 2, 2, 0, id="the-status-trails-the-watch"),
        pytest.param(["a"], 2, 1, 0, id="controller-behind"),
    ],
)
def test_the_pods_the_deployment_made_and_the_watch_has_not_shown(
    pods: list[str], made: int, observed: int, unseen: int
) -> None:
    watched = [pod(name) for name in pods] + [pod("leaving", deleting=True)]
    assert observation.unseen_pods(watched, deployment(made, observed=observed)) == unseen
    assert observation.unseen_pods(watched, None) == 0


def test_the_job_ids_are_read_from_this_runtimes_document() -> None:
    assert observation.parse_worker_document(ours()).job_ids == ("AJ_1",)
    assert observation.parse_worker_document(ours(jobs=())).job_ids == ()


@pytest.mark.parametrize(
    "jobs",
    [
        pytest.param(None, id="no-list"),
        pytest.param([{"room": "r"}], id="job-without-id"),
        pytest.param([{"id": ""}], id="empty-id"),
        pytest.param(["AJ_1"], id="not-an-object"),
    ],
)
def test_without_every_jobs_id_the_jobs_are_known_by_their_count_only(jobs: object) -> None:
    raw: dict[str, object] = {"worker_type": "JT_ROOM", "active_jobs": 1, "worker_load": 0.2}
    if jobs is not None:
        raw["jobs"] = jobs
    assert observation.parse_worker_document(raw).job_ids is None


@pytest.mark.parametrize(
    ("since", "now", "stale"),
    [
        pytest.param(None, 100.0, False, id="agreeing"),
        pytest.param(100.0, 100.0, False, id="just-began"),
        pytest.param(100.0, 114.9, False, id="under-three-periods"),
        pytest.param(100.0, 115.0, True, id="three-periods"),
        pytest.param(100.0, 400.0, True, id="long-past"),
    ],
)
def test_the_pod_watch_is_stale_after_three_periods_of_disagreement(
    since: float | None, now: float, stale: bool
) -> None:
    assert observation.watch_stale(since, now, period_s=5.0) is stale
