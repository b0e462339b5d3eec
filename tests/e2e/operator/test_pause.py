"""A pause and autoscaling turned off, on the rig: the fleet keeps its size until spec.replicas
changes (`sizing.hold`), and the autoscaler takes over again where the pause left it.

No call is needed: the sizes come from minReplicas, which the autoscaler follows at once, while
the operator's rounds (a second each) show that it saw every spec it was given.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.conftest import Kubectl
from tests.e2e.operator.conftest import OperatorProcess, condition, get_json
from tests.e2e.operator.test_agentworker import NAME, apply, aw
from tests.e2e.operator.test_autoscaling import (
    FAST,
    events,
    fleet,
    patch_autoscaling,
    status_of,
    wait_status,
    wait_sync_rounds,
)
from tests.rig import env as rig_env
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture
def operator_args() -> tuple[str, ...]:
    return FAST


def replicas(kubectl: Kubectl, namespace: str) -> int:
    deployment = get_json(kubectl, "deployment", NAME, "-n", namespace)
    return int(deployment["spec"]["replicas"])


def seen(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    """The AgentWorker once the operator's status says it saw its latest generation."""
    return wait_for(
        "the operator saw the latest spec",
        lambda: aw(kubectl, namespace),
        lambda obj: (
            (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
        ),
        timeout_s=30,
    )


def test_a_paused_or_unautoscaled_fleet_keeps_its_size_until_spec_replicas_changes(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess,
) -> None:  # fmt: skip
    apply(kubectl, namespace, fleet(rig, namespace, minReplicas=3, maxReplicas=4))
    wait_status(kubectl, namespace, "3 workers ready", lambda s: s.get("readyReplicas") == 3)
    assert aw(kubectl, namespace)["spec"]["replicas"] == 3

    # paused, a lower minimum asks for nothing
    patch_autoscaling(kubectl, namespace, paused=True)
    wait_for(
        "ScalingLimited Paused",
        lambda: condition(aw(kubectl, namespace), "ScalingLimited"),
        lambda c: c.get("reason") == "Paused" and c.get("status") == "True",
    )
    assert wait_for("a Paused Event", lambda: events(kubectl, namespace, "Paused"), bool)
    patch_autoscaling(kubectl, namespace, minReplicas=1)
    seen(kubectl, namespace)
    wait_sync_rounds(operator, 5)
    assert replicas(kubectl, namespace) == 3, "a paused fleet was resized"
    assert status_of(kubectl, namespace).get("desiredReplicas") == 3

    # resumed, the same spec scales the idle fleet down: the pause was what held it
    patch_autoscaling(kubectl, namespace, paused=False)
    wait_for("the scale-down once resumed", lambda: replicas(kubectl, namespace), (1).__eq__)
    assert events(kubectl, namespace, "Resumed")

    # autoscaling off at a size spec.replicas does not say (2 against 3): the size stays
    patch_autoscaling(kubectl, namespace, minReplicas=2)
    wait_for("2 workers", lambda: replicas(kubectl, namespace), (2).__eq__)
    patch_autoscaling(kubectl, namespace, enabled=False)
    seen(kubectl, namespace)
    wait_sync_rounds(operator, 5)
    assert aw(kubectl, namespace)["spec"]["replicas"] == 3
    assert replicas(kubectl, namespace) == 2, "turning autoscaling off resized the fleet"
    limited = condition(aw(kubectl, namespace), "ScalingLimited")
    assert limited.get("reason") == "AutoscalingDisabled", limited

    # a person's resize through the scale subresource is applied
    kubectl("scale", "aw", NAME, "-n", namespace, "--replicas=1")
    wait_for("the resize to 1", lambda: replicas(kubectl, namespace), (1).__eq__)
    wait_status(kubectl, namespace, "1 worker", lambda s: s.get("replicas") == 1)
    body = json.dumps({"spec": {"replicas": 2}})
    kubectl("patch", "aw", NAME, "-n", namespace, "--type=merge", "-p", body)
    wait_for("the resize to 2", lambda: replicas(kubectl, namespace), (2).__eq__)
