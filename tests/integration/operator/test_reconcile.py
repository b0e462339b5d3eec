"""Handlers in-process (`InProcessOperator`) against the rig's API server: objects, SSA, status."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import yaml

from agentworker_operator import builders
from tests.e2e.conftest import Kubectl
from tests.e2e.operator.conftest import example, get_json
from tests.integration.operator.inprocess import InProcessOperator
from tests.rig import env as rig_env
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NAME = "basic-agent"


def run_operator(namespace: str) -> InProcessOperator:
    return InProcessOperator(namespace, timeout_s=60)


def apply(kubectl: Kubectl, namespace: str, manifest: dict[str, Any]) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(manifest))


def test_reconcile_applies_owned_objects_under_one_field_manager(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, crd: str, credentials: str
) -> None:
    apply(kubectl, namespace, example(rig, replicas=0))
    with run_operator(namespace):
        made = {
            kind: wait_for(
                f"{kind} {name}",
                functools.partial(
                    get_json, kubectl, kind, name, "-n", namespace, "--show-managed-fields"
                ),
                bool,
                timeout_s=30,
            )
            for kind, name in [
                ("deployment", NAME),
                ("poddisruptionbudget", NAME),
                ("service", f"{NAME}-metrics"),
            ]
        }
    uid = get_json(kubectl, "agentworker", NAME, "-n", namespace)["metadata"]["uid"]
    for obj in made.values():
        assert obj["metadata"]["ownerReferences"][0]["uid"] == uid
        managers = {
            m["manager"] for m in obj["metadata"]["managedFields"] if m["operation"] == "Apply"
        }
        assert managers == {builders.FIELD_MANAGER}
    assert made["deployment"]["spec"]["replicas"] == 0
    assert made["service"]["spec"]["clusterIP"] == "None"
