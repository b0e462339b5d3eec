"""A namespace enforcing the restricted Pod Security Standard admits the chart's and workers' pods.

The API server's PodSecurity admission plugin (on by default) checks every pod created in a
namespace labelled `pod-security.kubernetes.io/enforce=restricted`. The chart is installed there,
`helm test` runs, and an AgentWorker's worker pod is made by its ReplicaSet; each must be admitted
and become Ready. The control: the same plain pod (root allowed, no seccomp profile, capabilities
kept) that the namespace admits before it is labelled is refused with a PodSecurity message after.
The `warn` label makes the API server also check pod templates (the chart's Deployment, the
operator's worker Deployment) and say so in a warning, which must not appear either.

The process runner does not enforce a pod's securityContext at run time (its processes run as the
runner's user); what is proved here is admission.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.chart.conftest import CHART, Helm, write_values
from tests.e2e.chart.test_install import AGENT, operator_pods
from tests.e2e.conftest import Kubectl
from tests.e2e.operator.conftest import condition, example, get_json
from tests.rig import env as rig_env
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(360)]

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/warn-version": "latest",
}
REFUSED = 'violates PodSecurity "restricted:latest"'
WARNED = "would violate PodSecurity"
INSTANCE = "app.kubernetes.io/instance"


def plain_pod(name: str) -> str:
    """A pod as one writes it without thinking of security: the baseline admits it."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": "rig.invalid/ignored"}]},
    }
    return yaml.safe_dump(pod)


def pod_security_refusals(kubectl: Kubectl, namespace: str) -> list[str]:
    """The messages of the Events saying a controller's pod was refused by PodSecurity."""
    events = get_json(kubectl, "events", "-n", namespace)["items"]
    return [
        f"{e['involvedObject']['kind']}/{e['involvedObject']['name']}: {e['message']}"
        for e in events
        if "PodSecurity" in e.get("message", "")
    ]


def ready_pods(kubectl: Kubectl, namespace: str, selector: str) -> list[str]:
    items: list[dict[str, Any]] = get_json(kubectl, "pods", "-n", namespace, "-l", selector)[
        "items"
    ]
    return [p["metadata"]["name"] for p in items if condition(p, "Ready").get("status") == "True"]


def worker_state(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    """The AgentWorker's Ready condition and ready workers, and any PodSecurity refusal."""
    aw = get_json(kubectl, "agentworker", AGENT, "-n", namespace)
    return {
        "ready": condition(aw, "Ready").get("status"),
        "readyReplicas": (aw.get("status") or {}).get("readyReplicas"),
        "refusals": pod_security_refusals(kubectl, namespace),
    }


def test_restricted_namespace_admits_operator_helm_test_and_worker_pods(
    helm: Helm, kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, crd: str,
    credentials: str, tmp_path: Path,
) -> None:  # fmt: skip
    dry_run = ("apply", "--dry-run=server", "-n", namespace, "-f", "-")
    before = kubectl(*dry_run, stdin=plain_pod("plain"), check=False)
    assert before.returncode == 0, f"unlabelled, the namespace admits it: {before.stderr}"
    kubectl("label", "namespace", namespace, *(f"{k}={v}" for k, v in RESTRICTED.items()))
    after = kubectl(*dry_run, stdin=plain_pod("plain"), check=False)
    assert after.returncode != 0, "the restricted namespace admitted a pod that may run as root"
    assert REFUSED in after.stderr, after.stderr
    assert "runAsNonRoot" in after.stderr, after.stderr
    assert "seccompProfile" in after.stderr, after.stderr

    release = f"ps-{namespace[-6:]}"
    values = write_values(
        tmp_path / "values.yaml",
        {
            "crds": {"enabled": False},  # the rig's CRD is shared (the `crd` fixture applies it)
            "watchNamespaces": [namespace],
            "replicaCount": 1,
            "bindAddress": "$(POD_IP)",  # every pod shares the host's network namespace
            "image": {
                "registry": "rig.invalid",
                "repository": "agent-operator",
                "tag": "never-pulled",
            },
        },
    )
    try:
        installed = helm("install", release, str(CHART), "-n", namespace, "-f", str(values),
                         "--wait", "--timeout", "180s", check=False)  # fmt: skip
        refusals = pod_security_refusals(kubectl, namespace)
        assert installed.returncode == 0, f"{installed.stderr.strip()}\nrefused: {refusals}"
        assert WARNED not in installed.stdout + installed.stderr, installed.stderr
        operator = f"{INSTANCE}={release}"
        wait_for(
            "the operator pod Ready", lambda: ready_pods(kubectl, namespace, operator),
            lambda names: len(names) == 1, timeout_s=60,
        )  # fmt: skip
        helm("test", release, "-n", namespace, "--timeout", "120s")  # its pod is admitted too

        applied = kubectl("apply", "-n", namespace, "-f", "-",
                          stdin=yaml.safe_dump(example(rig, replicas=1)))  # fmt: skip
        assert WARNED not in applied.stderr, applied.stderr
        state = wait_for(
            f"AgentWorker {AGENT} Ready with 1 worker, or a PodSecurity refusal",
            lambda: worker_state(kubectl, namespace),
            lambda seen: (
                bool(seen["refusals"]) or (seen["ready"] == "True" and seen["readyReplicas"] == 1)
            ),
            timeout_s=150,
            interval_s=0.5,
        )
        assert not state["refusals"], f"pods refused: {state['refusals']}"
        workers = ready_pods(kubectl, namespace, f"{INSTANCE}={AGENT}")
        assert len(workers) == 1, workers
        assert len(operator_pods(kubectl, namespace, release)) == 1
        labels = get_json(kubectl, "namespace", namespace)["metadata"]["labels"]
        assert {k: labels.get(k) for k in RESTRICTED} == RESTRICTED, "still enforced at the end"
    finally:
        helm("uninstall", release, "-n", namespace, "--wait", "--timeout", "120s", check=False)
