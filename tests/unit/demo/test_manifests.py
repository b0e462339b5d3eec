"""What the demo installs: the chart's values and the example fleet, changed only where it must."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hack.demo import manifests

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "agentworker-autoscaled.yaml"


def example() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return loaded


def demo_fleet() -> dict[str, Any]:
    return manifests.build_agentworker(
        example(), namespace="ns", livekit_url="ws://127.0.0.1:1234", entrypoint="agent:opts"
    )


def test_the_fleet_is_the_example_pointed_at_the_rig_with_the_call_agent() -> None:
    fleet, original = demo_fleet(), example()
    assert fleet["metadata"] == {**original["metadata"], "namespace": "ns"}
    assert fleet["spec"]["livekit"]["url"] == "ws://127.0.0.1:1234"
    assert fleet["spec"]["livekit"]["credentialsSecret"] == {"name": "livekit-credentials"}
    assert fleet["spec"]["entrypoint"] == "agent:opts"
    assert fleet["spec"]["autoscaling"] == original["spec"]["autoscaling"]
    assert original["spec"]["livekit"]["url"] == "ws://127.0.0.1:7880", "the example is untouched"


def test_the_fleet_starts_at_its_warm_headroom() -> None:
    assert demo_fleet()["spec"]["replicas"] == 2 == example()["spec"]["autoscaling"][
        "minAvailableWorkers"
    ]  # fmt: skip


def test_resting_replicas_default_to_the_crds_one() -> None:
    bare = {"spec": {"autoscaling": {"enabled": True}}}
    assert manifests.resting_replicas(bare) == 1
    assert manifests.resting_replicas({"spec": {"autoscaling": {"minReplicas": 3}}}) == 3
    assert manifests.autoscaling_number(bare, "targetLoad", 0.5) == 0.5


def test_the_chart_watches_only_the_demo_namespace_and_leaves_the_crd_alone() -> None:
    values = manifests.build_values("ns")
    assert values["watchNamespaces"] == ["ns"]
    assert values["crds"] == {"enabled": False}
    assert values["bindAddress"] == "$(POD_IP)"
