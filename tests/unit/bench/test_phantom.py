"""bench/phantom.py: the observing benchmark's AgentWorkers have Deployment pods that only the
phantom node takes, and the Deployments are settled only when they count every pod ready."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
import yaml

from agentworker_operator import builders
from agentworker_operator import spec as specs
from bench import fake_fleet, phantom
from bench.fake_fleet import FleetShape

SHAPE = FleetShape(agentworkers=2, workers_per_agentworker=3)
NOW = datetime.datetime(2026, 12, 7, 17, 0, tzinfo=datetime.UTC)


def agentworker() -> dict[str, Any]:
    example = yaml.safe_load(phantom.EXAMPLE.read_text())
    return phantom.build_agentworker(example, "observe-0", "ws://127.0.0.1:7880", replicas=3)


def template() -> dict[str, Any]:
    owner = builders.Owner(name="observe-0", namespace=phantom.NAMESPACE, uid="uid-0")
    return builders.build_pod_template(owner, specs.parse_spec(agentworker()["spec"]))


def tolerates(tolerations: list[dict[str, Any]], taint: dict[str, Any]) -> bool:
    """Kubernetes' Toleration.ToleratesTaint, for the fields the benchmark uses."""
    for t in tolerations:
        effect = not t.get("effect") or t["effect"] == taint["effect"]
        if t.get("operator") == "Exists":
            matches = t.get("key") in (None, taint["key"])
        else:
            matches = t.get("key") == taint["key"] and t.get("value") == taint.get("value")
        if effect and matches:
            return True
    return False


def test_the_agentworkers_have_one_replica_per_fake_worker_and_no_autoscaling() -> None:
    spec = specs.parse_spec(agentworker()["spec"])
    assert spec.replicas == 3
    assert not spec.autoscaling.enabled
    assert builders.desired_replicas(spec) == 3


def test_the_pod_template_selects_the_phantom_node_and_tolerates_its_taint() -> None:
    pod_spec = template()["spec"]
    assert pod_spec["nodeSelector"] == {phantom.HOSTNAME_LABEL: phantom.NODE}
    assert tolerates(pod_spec["tolerations"], phantom.TAINT)
    assert phantom.build_node()["metadata"]["labels"][phantom.HOSTNAME_LABEL] == phantom.NODE


@pytest.mark.parametrize("effect", ["NoSchedule", "NoExecute"])
def test_the_pods_tolerate_a_node_not_ready_yet_or_a_late_heartbeat(effect: str) -> None:
    tolerations = template()["spec"]["tolerations"]
    for key in phantom.CONDITION_TAINTS:
        assert tolerates(tolerations, {"key": key, "effect": effect})


def test_the_phantom_node_is_schedulable_but_tainted_for_every_other_pod() -> None:
    node = phantom.build_node()
    assert not node["spec"].get("unschedulable")
    assert node["spec"]["taints"] == [phantom.TAINT]
    assert not tolerates([], phantom.TAINT)


def test_the_deployments_pods_carry_the_benchmark_label_besides_the_operators() -> None:
    labels = template()["metadata"]["labels"]
    assert phantom.pod_selector() == f"{phantom.BENCH_LABEL}={labels[phantom.BENCH_LABEL]}"
    assert labels[builders.LABEL_INSTANCE] == "observe-0"
    assert labels[builders.LABEL_NAME] == builders.APP_NAME


def test_the_phantom_node_has_room_for_every_pod_the_scheduler_would_fit() -> None:
    capacity = phantom.node_status(NOW, NOW)["allocatable"]
    requests = template()["spec"]["containers"][0]["resources"]["requests"]
    assert requests == {"cpu": "100m", "memory": "256Mi"}
    assert int(capacity["pods"]) == phantom.NODE_PODS
    assert int(capacity["cpu"]) * 10 >= phantom.NODE_PODS
    assert int(capacity["memory"].removesuffix("Gi")) * 4 >= phantom.NODE_PODS


def deployment(aw: int, **status: int) -> dict[str, Any]:
    counts = {"replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}
    return {
        "metadata": {"name": fake_fleet.agentworker_name(aw), "generation": 2},
        "spec": {"replicas": 3},
        "status": {"observedGeneration": 2, **counts, **status},
    }


def test_deployments_that_count_every_pod_ready_are_settled() -> None:
    assert phantom.unsettled(SHAPE, [deployment(0), deployment(1)]) == []


@pytest.mark.parametrize(
    ("deployments", "named"),
    [
        ([deployment(0)], "Deployment observe-1 not made"),
        ([deployment(0), deployment(1, readyReplicas=2)], "readyReplicas': 2"),
        ([deployment(0), deployment(1, observedGeneration=1)], "not seen its latest spec"),
        ([deployment(0, replicas=4, updatedReplicas=4), deployment(1)], "'replicas': 4"),
    ],
    ids=["not-made", "a-pod-not-ready", "spec-not-seen", "a-pod-too-many"],
)
def test_unsettled_names_the_deployment_and_what_it_lacks(
    deployments: list[dict[str, Any]], named: str
) -> None:
    wrong = phantom.unsettled(SHAPE, deployments)
    assert len(wrong) == 1
    assert named in wrong[0]
