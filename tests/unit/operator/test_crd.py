"""The shipped CRD: names, subresources, printer columns, and a description on every field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentworker_operator import podtemplate
from hack import generate

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most

CRD_PATH = Path(__file__).resolve().parents[3] / "crds" / "agentworker.dev_agentworkers.yaml"
CRD: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
VERSION: dict[str, Any] = CRD["spec"]["versions"][0]
SCHEMA: dict[str, Any] = VERSION["schema"]["openAPIV3Schema"]
SPEC: dict[str, Any] = SCHEMA["properties"]["spec"]


def _walk(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, prop in schema.get("properties", {}).items():
        yield f"{path}.{name}", prop
        yield from _walk(prop, f"{path}.{name}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")


def test_names_group_and_scope() -> None:
    assert CRD["metadata"]["name"] == "agentworkers.agentworker.dev"
    assert CRD["spec"]["names"]["shortNames"] == ["aw"]
    assert CRD["spec"]["scope"] == "Namespaced"
    assert VERSION["name"] == "v1alpha1"


def test_scale_subresource_points_at_replicas_and_selector() -> None:
    assert VERSION["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }


def test_printer_columns() -> None:
    columns = [c["name"] for c in VERSION["additionalPrinterColumns"]]
    assert columns == ["Agent", "Ready", "Desired", "Jobs", "Load", "Age"]


def test_every_spec_and_status_field_has_a_description() -> None:
    missing = [
        path
        for path, prop in _walk(SCHEMA, "")
        if not prop.get("description") and not path.startswith((".metadata",))
    ]
    assert missing == []


def test_cross_field_rules_are_cel() -> None:
    rules = [
        rule["rule"]
        for _, prop in _walk(SCHEMA, "")
        for rule in prop.get("x-kubernetes-validations", [])
    ]
    assert any("self.minReplicas <= self.maxReplicas" in rule for rule in rules)
    assert any("targetLoad <= self.loadThreshold" in rule for rule in rules)
    assert any("has(self.maxUnavailable) && has(self.minAvailable)" in rule for rule in rules)
    assert any("self.dnsPolicy != 'None'" in rule for rule in rules)
    assert any("!has(self.policies) || (!has(self.stepPods)" in rule for rule in rules)
    assert any("has(self.minAvailableWorkers)" in rule for rule in rules)
    assert any("(has(self.workers) ? 1 : 0) + (has(self.slots) ? 1 : 0)" in rule for rule in rules)


def _rules(schema: dict[str, Any]) -> str:
    return " ".join(rule["rule"] for rule in schema.get("x-kubernetes-validations", []))


def test_the_crd_refuses_the_operators_container_names_and_port() -> None:
    init_rules = _rules(SPEC["properties"]["podTemplate"]["properties"]["initContainers"])
    for name in podtemplate.OPERATOR_CONTAINERS:
        assert f"'{name}'" in init_rules
    port_rules = _rules(SPEC["properties"]["ports"])
    assert str(podtemplate.WORKER_PORT) in port_rules
    assert f"'{podtemplate.WORKER_PORT_NAME}'" in port_rules


def test_a_rollout_offers_a_surge_and_never_max_unavailable() -> None:
    rollout = SPEC["properties"]["rollout"]
    assert set(rollout["properties"]) == {"maxSurge"}
    assert "maxUnavailable 0" in rollout["description"]


def test_the_disruption_budget_has_no_default_limit_so_either_may_be_set() -> None:
    # a default maxUnavailable would be stored beside a user's minAvailable, and refused
    budget = SPEC["properties"]["disruptionBudget"]["properties"]
    assert "default" not in budget["maxUnavailable"]
    assert "default" not in budget["minAvailable"]
    assert budget["enabled"]["default"] is True


def test_the_old_spellings_have_no_default_so_their_successors_may_be_set() -> None:
    # a default stepPods, period or minAvailableWorkers would be stored beside a user's
    # policies or headroom amount, and refused
    autoscaling = SPEC["properties"]["autoscaling"]["properties"]
    assert "default" not in autoscaling["minAvailableWorkers"]
    for direction in ("scaleUp", "scaleDown"):
        behavior = autoscaling[direction]["properties"]
        assert "default" not in behavior["stepPods"]
        assert "default" not in behavior["period"]
        assert "default" not in behavior["policies"]
        assert behavior["selectPolicy"]["enum"] == ["Max", "Min", "Disabled"]
        policy = behavior["policies"]["items"]
        assert policy["properties"]["type"]["enum"] == ["Pods", "Percent"]
        assert policy["required"] == ["type", "value", "periodSeconds"]


@pytest.mark.parametrize(
    "path",
    ["rollout.maxSurge", "disruptionBudget.maxUnavailable", "disruptionBudget.minAvailable"],
)
def test_counts_or_percentages_are_int_or_string(path: str) -> None:
    parent, name = path.split(".")
    prop = SPEC["properties"][parent]["properties"][name]
    assert prop["x-kubernetes-int-or-string"] is True
    assert prop["anyOf"] == [{"type": "integer"}, {"type": "string"}]


def test_chart_copy_of_the_crd_is_current() -> None:
    wanted = generate.render_chart_crd(CRD_PATH.read_text())
    assert generate.CHART_CRD.read_text() == wanted, "run `make generate`"
