"""bench/phantom_kubelet.py: each pod the Deployments made plays one fake worker of its
AgentWorker (its IP that worker's address), and the status written is one the operator reads as
a running, ready worker."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from agentworker_operator import builders, observation
from bench import fake_fleet, phantom, phantom_kubelet
from bench.fake_fleet import FleetShape
from bench.phantom_kubelet import Placed

SHAPE = FleetShape(agentworkers=2, workers_per_agentworker=3)
NOW = datetime.datetime(2026, 12, 7, 17, 0, tzinfo=datetime.UTC)


def pod(
    name: str, *, aw: int = 0, uid: str = "", created: str = "2026-12-07T17:00:00Z", **meta: Any
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "uid": uid or f"uid-{name}",
            "creationTimestamp": created,
            "labels": {builders.LABEL_INSTANCE: fake_fleet.agentworker_name(aw)},
            **meta,
        },
        "spec": {
            "nodeName": phantom.NODE,
            "containers": [{"name": builders.CONTAINER_NAME, "image": "worker:1"}],
        },
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastTransitionTime": "2026-12-07T16:59:59Z",
                }
            ],
        },
    }


def by_uid(*placed: Placed) -> dict[str, Placed]:
    return {p.uid: p for p in placed}


def test_an_agentworkers_pods_play_its_own_workers_oldest_pod_lowest_worker() -> None:
    pods = [
        pod("observe-1-abc-x", aw=1, created="2026-12-07T17:00:02Z"),
        pod("observe-1-abc-y", aw=1, created="2026-12-07T17:00:01Z"),
        pod("observe-0-def-z", aw=0),
    ]
    placed = phantom_kubelet.place(SHAPE, pods, {})
    assert {p.name: p.index for p in placed} == {
        "observe-0-def-z": 0,
        "observe-1-abc-y": 3,
        "observe-1-abc-x": 4,
    }


def test_a_pod_takes_the_lowest_worker_no_other_pod_holds() -> None:
    holding = by_uid(Placed(name="a", uid="uid-a", index=0), Placed(name="c", uid="uid-c", index=2))
    placed = phantom_kubelet.place(SHAPE, [pod("a"), pod("b"), pod("c")], holding)
    assert placed == [Placed(name="b", uid="uid-b", index=1)]


def test_a_pod_whose_agentworkers_workers_are_all_taken_waits() -> None:
    pods = [pod(f"p{k}", created=f"2026-12-07T17:00:0{k}Z") for k in range(4)]
    placed = phantom_kubelet.place(SHAPE, pods, {})
    assert [p.name for p in placed] == ["p0", "p1", "p2"]
    assert [p.index for p in placed] == [0, 1, 2]


@pytest.mark.parametrize(
    "left_alone",
    [
        pod("deleting", deletionTimestamp="2026-12-07T17:01:00Z"),
        pod("stranger", aw=7),
        {**pod("unlabelled"), "metadata": {"name": "unlabelled", "uid": "u"}},
    ],
    ids=["being-deleted", "of-no-benchmark-agentworker", "without-instance-label"],
)
def test_pods_that_are_no_worker_of_the_benchmark_are_not_started(
    left_alone: dict[str, Any],
) -> None:
    assert phantom_kubelet.place(SHAPE, [left_alone], {}) == []


def test_a_pod_gone_or_being_deleted_frees_its_worker() -> None:
    placed = by_uid(*(Placed(name=n, uid=f"uid-{n}", index=i) for i, n in enumerate("abc")))
    listed = [pod("a"), pod("b", deletionTimestamp="2026-12-07T17:01:00Z")]
    kept = phantom_kubelet.held(placed, listed)
    assert kept == by_uid(placed["uid-a"])
    assert [p.index for p in phantom_kubelet.place(SHAPE, [pod("d")], kept)] == [1]


def running(p: dict[str, Any], ip: str) -> dict[str, Any]:
    return {**p, "status": phantom_kubelet.pod_status(p, ip, NOW)}


def test_the_status_written_is_a_ready_worker_on_the_fake_workers_address() -> None:
    ip = fake_fleet.address(4)
    view = observation.pod_view(running(pod("observe-1-abc-x", aw=1), ip))
    assert (view.ip, view.ready, view.restarts, view.terminating) == (ip, True, 0, False)


def test_the_status_keeps_the_schedulers_condition_and_runs_every_container() -> None:
    p = pod("a")
    p["spec"]["initContainers"] = [{"name": "companion", "image": "operator:1"}]
    status = phantom_kubelet.pod_status(p, "127.77.0.1", NOW)
    assert status["phase"] == "Running"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["PodScheduled"] == p["status"]["conditions"][0]
    assert all(c["status"] == "True" for c in conditions.values())
    assert [
        (c["name"], c["ready"], "running" in c["state"]) for c in status["containerStatuses"]
    ] == [(builders.CONTAINER_NAME, True, True)]
    (init,) = status["initContainerStatuses"]
    assert init["state"]["terminated"]["exitCode"] == 0


def test_names_and_uids_say_which_pod_plays_which_worker() -> None:
    placed = by_uid(Placed(name="observe-0-x", uid="u1", index=2))
    assert phantom_kubelet.names(placed) == {2: "observe-0-x"}
    assert phantom_kubelet.uids(placed) == {"observe-0-x": "u1"}


def test_describe_says_how_far_the_pods_got_and_why_one_is_not_scheduled() -> None:
    waiting = pod("w")
    waiting["spec"].pop("nodeName")
    waiting["status"]["conditions"] = [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/2 nodes are available: 1 node(s) had untolerated taint",
        }
    ]
    text = phantom_kubelet.describe(SHAPE, [pod("a"), waiting], placed=1)
    assert text.startswith(f"2 worker pods of 6, 1 bound to {phantom.NODE}, 1 started")
    assert "w not scheduled: Unschedulable: 0/2 nodes are available" in text


def test_expected_counts_name_the_unknown_workers_by_the_pods_that_play_them() -> None:
    shape = FleetShape(agentworkers=1, workers_per_agentworker=100)
    fault = next(i for i in range(shape.workers) if fake_fleet.kind(shape, i) in fake_fleet.FAULTS)
    names = {i: f"observe-0-7d9f-{i:05d}" for i in range(shape.workers)}
    counts = fake_fleet.expected_counts(shape, 0, 1_800_000_000.0, names)
    assert counts.unknown_workers == (names[fault],)
