"""The operator's RBAC, as the chart renders it, is exactly an allowlist a reviewer can read.

Every rule of every Role and ClusterRole bound to the operator's ServiceAccount is flattened to
(API group, resource, resource name, verb) and compared, both ways, with the allowlist below:
a new permission fails this test until it is added here, on purpose. Secrets are the point: the
operator may write them, read exactly one (its control key) and read the others only when
`rbac.readCredentialSecrets` asks for call recovery.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.chart.conftest import CHART, Helm, documents

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

RELEASE = "aw"
Permission = tuple[str, str, str, str]
"""(API group, resource, resource name or "*", verb)."""


def grants(group: str, resource: str, *verbs: str, name: str = "*") -> set[Permission]:
    return {(group, resource, name, verb) for verb in verbs}


CLUSTER = grants("apiextensions.k8s.io", "customresourcedefinitions", "list", "watch") | grants(
    "", "namespaces", "list", "watch"
)
NAMESPACED = (
    grants("agentworker.dev", "agentworkers", "get", "list", "watch", "patch")
    | grants("agentworker.dev", "agentworkers/status", "get", "patch")
    | grants("agentworker.dev", "agentworkers/finalizers", "update")
    | grants("apps", "deployments", "get", "list", "watch", "create", "patch")
    | grants("policy", "poddisruptionbudgets", "get", "create", "patch", "delete")
    | grants("", "services", "get", "create", "patch")
    | grants("", "secrets", "create", "patch")
    | grants("", "pods", "list", "watch", "patch")
    | grants("", "events", "create", "patch")
    | grants("events.k8s.io", "events", "create", "patch")
)
RELEASE_NAMESPACE = (
    grants("coordination.k8s.io", "leases", "create")
    | grants("coordination.k8s.io", "leases", "get", "update", name=RELEASE)
    | grants("", "secrets", "create")
    | grants("", "secrets", "get", name=f"{RELEASE}-control-key")
)
READ_CREDENTIALS = grants("", "secrets", "get")


def flatten(rules: list[dict[str, Any]]) -> set[Permission]:
    return {
        (group, resource, name, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for name in rule.get("resourceNames") or ["*"]
        for verb in rule.get("verbs", [])
    }


def operator_permissions(helm: Helm, *values: str) -> dict[str, set[Permission]]:
    """The operator's permissions by scope: "cluster", or the namespace of a Role."""
    args = ["template", RELEASE, str(CHART), "-n", "agents", "--set", "crds.enabled=false"]
    for value in values:
        args += ["--set", value]
    objects = documents(helm(*args).stdout)
    roles = {
        (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o["rules"]
        for o in objects
        if o["kind"] in ("Role", "ClusterRole")
    }
    found: dict[str, set[Permission]] = {}
    for binding in objects:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        subjects = binding.get("subjects") or []
        if not any(s.get("kind") == "ServiceAccount" and s["name"] == RELEASE for s in subjects):
            continue
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace", "")
        rules = roles[(ref["kind"], namespace if ref["kind"] == "Role" else "", ref["name"])]
        scope = namespace if binding["kind"] == "RoleBinding" else "cluster"
        found.setdefault(scope, set()).update(flatten(rules))
    return found


def test_default_rbac_is_the_allowlist_and_reads_no_secret_but_the_control_key(
    helm: Helm,
) -> None:
    permissions = operator_permissions(helm)
    assert permissions == {"cluster": CLUSTER | NAMESPACED, "agents": RELEASE_NAMESPACE}
    readable = {p for scope in permissions.values() for p in scope if p[1] == "secrets"}
    assert {p for p in readable if p[3] in ("get", "list", "watch")} == {
        ("", "secrets", f"{RELEASE}-control-key", "get")
    }


def test_watch_namespaces_move_the_namespaced_rules_into_those_namespaces(helm: Helm) -> None:
    permissions = operator_permissions(helm, "watchNamespaces={team-a,team-b}")
    assert permissions == {
        "cluster": CLUSTER,
        "team-a": NAMESPACED,
        "team-b": NAMESPACED,
        "agents": RELEASE_NAMESPACE,
    }


def test_call_recovery_adds_only_reading_secrets(helm: Helm) -> None:
    permissions = operator_permissions(helm, "rbac.readCredentialSecrets=true")
    assert permissions == {
        "cluster": CLUSTER | NAMESPACED | READ_CREDENTIALS,
        "agents": RELEASE_NAMESPACE,
    }
