"""`helm install`, `helm test`, `helm upgrade` and `helm uninstall` of the chart on the rig.

The operator runs as the chart's pods: the process runner runs their `agent-operator` command in
the project venv (the image name is never pulled), with the ServiceAccount token the API server
issues for each pod, so the chart's RBAC is what the operator gets. The release watches only the
test's own namespace (Roles there) and holds its own Lease, so other tests on the shared rig are
undisturbed. Every wait is bounded and fails with the last state it saw.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.chart.conftest import CHART, Helm, wait_gone, write_values
from tests.e2e.conftest import Kubectl, access_refusal
from tests.e2e.operator.conftest import condition, example, get_json
from tests.rig import env as rig_env
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

logger = logging.getLogger(__name__)
AGENT = "basic-agent"
HOLDER_LABEL = "agentworker.dev/lease-holder"


def operator_pods(kubectl: Kubectl, namespace: str, release: str) -> list[dict[str, Any]]:
    selector = f"app.kubernetes.io/name=agentworker-operator,app.kubernetes.io/instance={release}"
    items: list[dict[str, Any]] = get_json(kubectl, "pods", "-n", namespace, "-l", selector)[
        "items"
    ]
    return items


def readyz(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod's /readyz answer (the chart's health port on the pod's own IP)."""
    url = f"http://{pod['status']['podIP']}:8080/readyz"
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:  # loopback: 127.0.x.y
            found: dict[str, Any] = json.loads(answer.read())
    except OSError as error:
        found = {"error": str(error)}
    return found


def leadership(kubectl: Kubectl, namespace: str, release: str) -> dict[str, Any]:
    """Ready, undeleted operator pods with their /readyz, those labelled as the Lease holder
    (the webhook Service's selector), and the Lease holder."""
    ready = [
        p
        for p in operator_pods(kubectl, namespace, release)
        if condition(p, "Ready").get("status") == "True"
        and not p["metadata"].get("deletionTimestamp")
    ]
    pods = {p["metadata"]["name"]: readyz(p) for p in ready}
    labelled = [
        p["metadata"]["name"]
        for p in ready
        if (p["metadata"].get("labels") or {}).get(HOLDER_LABEL) == "true"
    ]
    lease = get_json(kubectl, "lease", release, "-n", namespace)
    return {"pods": pods, "labelled": labelled, "holder": lease["spec"].get("holderIdentity")}


def one_leader(replicas: int, exclude: frozenset[str] = frozenset()) -> Any:
    """`replicas` ready pods (none of `exclude`), one of them leading and holding the Lease."""

    def check(seen: dict[str, Any]) -> bool:
        pods: dict[str, dict[str, Any]] = seen["pods"]
        leaders = [name for name, answer in pods.items() if answer.get("leader")]
        return (
            len(pods) == replicas
            and not exclude & set(pods)
            and all(answer.get("ready") for answer in pods.values())
            and leaders == [seen["holder"]]
            and seen["labelled"] == [seen["holder"]]  # webhooks go to it alone
        )

    return check


def agentworker(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    return get_json(kubectl, "agentworker", AGENT, "-n", namespace)


def worker_replica_sets(kubectl: Kubectl, namespace: str) -> list[str]:
    items = get_json(
        kubectl, "replicasets", "-n", namespace, "-l", f"app.kubernetes.io/instance={AGENT}"
    )
    return sorted(rs["metadata"]["name"] for rs in items["items"])


def operator_logs(rig: rig_env.RigEnv, namespace: str, release: str) -> str:
    """Everything the operator pods printed (the runner keeps one log file per container)."""
    files = sorted((rig.logs_dir / "pods").glob(f"{namespace}_{release}-*_operator.log"))
    return "\n".join(path.read_text(errors="replace") for path in files)


def can_i(kubectl: Kubectl, namespace: str, role: str, expected: dict[str, str]) -> None:
    """A ServiceAccount bound to the built-in `role` may do `expected` with AgentWorkers there.

    The controller-manager aggregates the chart's ClusterRoles into the built-in ones.
    """
    account = f"{role}-user"
    kubectl("create", "serviceaccount", account, "-n", namespace)
    kubectl("create", "rolebinding", account, f"--clusterrole={role}",
            f"--serviceaccount={namespace}:{account}", "-n", namespace)  # fmt: skip
    user = f"--as=system:serviceaccount:{namespace}:{account}"

    def answers() -> dict[str, str]:
        return {
            verb: kubectl("auth", "can-i", verb, "agentworkers.agentworker.dev", "-n", namespace,
                          user, check=False).stdout.strip()
            for verb in expected
        }  # fmt: skip

    wait_for(f"{role} to cover AgentWorkers", answers, lambda seen: seen == expected, timeout_s=30)


def timed(timings: dict[str, float], step: str, started: float) -> None:
    timings[step] = round(time.monotonic() - started, 1)
    logger.info("%s took %.1f s", step, timings[step])


def apply_example_until_ready(kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str) -> str:
    """examples/agentworker.yaml with one worker, until Ready=True; since when it is Ready."""
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(example(rig, replicas=1)))
    ready = wait_for(
        f"AgentWorker {AGENT} Ready=True with 1 ready worker",
        lambda: agentworker(kubectl, namespace),
        lambda aw: (
            condition(aw, "Ready").get("status") == "True"
            and aw["status"].get("readyReplicas") == 1
        ),
        timeout_s=120,
        interval_s=0.5,
    )
    since: str = condition(ready, "Ready")["lastTransitionTime"]
    return since


def upgrade_sampling_ready(helm: Helm, kubectl: Kubectl, namespace: str, *args: str) -> list[str]:
    """`helm upgrade *args`; the AgentWorker's Ready status every 0.5 s while it ran."""
    samples: list[str] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        upgrade = pool.submit(helm, "upgrade", *args)
        while not upgrade.done():
            samples.append(condition(agentworker(kubectl, namespace), "Ready").get("status", "?"))
            concurrent.futures.wait([upgrade], timeout=0.5)  # the next sample, or the upgrade's end
        upgrade.result()
    return samples


def assert_no_refusal(rig: rig_env.RigEnv, namespace: str, release: str) -> None:
    """The chart's RBAC was enough: the API server refused the operator pods nothing."""
    logs = operator_logs(rig, namespace, release)
    assert logs.count("operator starting") >= 4, "the operator ran as the chart's 2 + 2 pods"
    sign = access_refusal(logs)
    assert not sign, f"{sign!r} in the operator pods' logs"


def uninstall_and_delete_everything(
    helm: Helm, kubectl: Kubectl, namespace: str, release: str, timings: dict[str, float]
) -> None:
    """`helm uninstall`, then the AgentWorker and the namespace: each goes, none is stuck."""
    started = time.monotonic()
    helm("uninstall", release, "-n", namespace, "--wait", "--timeout", "120s")
    wait_gone(kubectl, "the operator pods to go", "pods", "-n", namespace, "-l",
              f"app.kubernetes.io/instance={release}", timeout_s=60)  # fmt: skip
    timed(timings, "helm uninstall to no operator pod", started)
    assert not helm("list", "-n", namespace, "-q").stdout.strip()
    for kind in ("clusterrole", "clusterrolebinding"):
        leftover = kubectl("get", kind, "-o", "name", "-l", f"app.kubernetes.io/instance={release}")
        assert not leftover.stdout.strip(), leftover.stdout
    started = time.monotonic()
    kubectl("delete", "agentworker", AGENT, "-n", namespace, "--wait=false")
    wait_gone(kubectl, "the AgentWorker to go with no operator running", "agentworker", AGENT,
              "-n", namespace, timeout_s=60)  # fmt: skip
    kubectl("delete", "namespace", namespace, "--wait=false")
    wait_gone(kubectl, "the namespace to go", "namespace", namespace, timeout_s=180)
    timed(timings, "AgentWorker and namespace deletion", started)


def test_install_reconciles_upgrade_rolls_operator_uninstall_leaves_nothing_stuck(
    helm: Helm, kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, crd: str,
    credentials: str, tmp_path: Path,
) -> None:  # fmt: skip
    release = f"aw-{namespace[-6:]}"
    values = write_values(
        tmp_path / "values.yaml",
        {
            "crds": {"enabled": False},  # the rig's CRD is shared (the `crd` fixture applies it)
            "watchNamespaces": [namespace],
            "bindAddress": "$(POD_IP)",  # every pod shares the host's network namespace
            "image": {
                "registry": "rig.invalid",
                "repository": "agent-operator",
                "tag": "never-pulled",
            },
            "webhook": {"enabled": True},  # its Service selects the Lease holder's label
        },
    )
    chart = [str(CHART), "-n", namespace, "-f", str(values), "--wait", "--timeout", "180s"]
    timings: dict[str, float] = {}

    started = time.monotonic()
    helm("install", release, *chart)
    first = wait_for(
        "2 ready operator pods, one leading", lambda: leadership(kubectl, namespace, release),
        one_leader(2), timeout_s=90,
    )  # fmt: skip
    timed(timings, "install to one leader", started)
    started = time.monotonic()
    helm("test", release, "-n", namespace, "--timeout", "120s")
    timed(timings, "helm test", started)
    started = time.monotonic()
    ready_since = apply_example_until_ready(kubectl, rig, namespace)
    timed(timings, "AgentWorker to Ready", started)
    workers = worker_replica_sets(kubectl, namespace)

    started = time.monotonic()
    samples = upgrade_sampling_ready(
        helm, kubectl, namespace, release, *chart, "--set", "logLevel=DEBUG"
    )
    timed(timings, "helm upgrade --wait", started)
    second = wait_for(
        "2 new ready operator pods, one leading", lambda: leadership(kubectl, namespace, release),
        one_leader(2, exclude=frozenset(first["pods"])), timeout_s=120,
    )  # fmt: skip
    timed(timings, "upgrade to one new leader", started)
    logger.info(
        "leader %s -> %s; worker ReplicaSets %s -> %s (the same code makes the same template)",
        first["holder"], second["holder"], workers, worker_replica_sets(kubectl, namespace),
    )  # fmt: skip
    assert set(samples) == {"True"}, f"Ready during the upgrade: {samples}"
    ready = condition(agentworker(kubectl, namespace), "Ready")
    assert (ready["status"], ready["lastTransitionTime"]) == ("True", ready_since), "never flipped"
    deployment = get_json(kubectl, "deployment", release, "-n", namespace)
    assert "--log-level=DEBUG" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    helm("test", release, "-n", namespace, "--timeout", "120s")
    can_i(kubectl, namespace, "edit", {"create": "yes", "delete": "yes", "list": "yes"})
    can_i(kubectl, namespace, "view", {"create": "no", "delete": "no", "list": "yes"})
    # Checked before uninstalling: once `helm uninstall` deletes the ServiceAccount, the
    # terminating leader's token is refused (it cannot release its Lease, which goes with the
    # namespace).
    assert_no_refusal(rig, namespace, release)

    uninstall_and_delete_everything(helm, kubectl, namespace, release, timings)
    logger.info("timings: %s", timings)
