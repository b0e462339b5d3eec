"""What holds the sync loop back on the whole rig: workers it cannot read, replicas a quota never
let exist, and a rollout in progress.

A fleet whose pods answer everything but /worker is blind: the operator keeps its size (before,
each unreadable worker asked for one more, up to maxReplicas). Replicas the Deployment never
created go first in a scale-down and cost no worker. A scale-down waits for a rollout: the
Deployment controller would split it across the old and new ReplicaSets, where the operator
cannot choose the victims. The operator syncs every second, with short windows (`FAST`).
"""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.conftest import Kubectl
from tests.e2e.operator.calls import ENTRYPOINT
from tests.e2e.operator.conftest import OperatorProcess, condition, get_json
from tests.e2e.operator.test_agentworker import NAME, apply, aw, is_ready, pods, wait_ready
from tests.e2e.operator.test_autoscaling import (
    FAST,
    events,
    fleet,
    live_pods,
    patch_autoscaling,
    sync_rounds,
    wait_status,
)
from tests.rig import env as rig_env
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

WORKER_PORT = 8081
AGENT_WORKER = Path(sys.executable).with_name("agent-worker")
RETIRED_LINE = "retired: taking no new job"
"""What the runtime logs when it accepts POST /retire."""


@pytest.fixture
def operator_args() -> tuple[str, ...]:
    """The operator observes the workers every second (the default is 5 s)."""
    return FAST


def read_worker(ip: str) -> dict[str, Any] | None:
    """The pod's /worker JSON, or None when it does not answer (gone, not started yet)."""
    try:
        with urllib.request.urlopen(f"http://{ip}:{WORKER_PORT}/worker", timeout=2) as response:
            document: dict[str, Any] = json.loads(response.read())
            return document
    except OSError:
        return None


class RetireWatch:
    """Reads the /worker of some pods on every `look`, while they run and are not being deleted
    (a deleted pod's address may go to a new pod), and remembers which said retired."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(names)
        self.reads = 0
        self.retired: set[str] = set()

    def look(self, current: Iterable[Mapping[str, Any]]) -> None:
        for pod in current:
            name, ip = pod["metadata"]["name"], (pod.get("status") or {}).get("podIP")
            if name not in self.names or pod["metadata"].get("deletionTimestamp") or not ip:
                continue
            document = read_worker(ip)
            if document is None:
                continue
            assert "retired" in document, f"{name}: not this runtime's /worker: {document}"
            self.reads += 1
            if document["retired"]:
                self.retired.add(name)


def deployment_replicas(kubectl: Kubectl, namespace: str) -> int:
    return int(get_json(kubectl, "deployment", NAME, "-n", namespace)["spec"]["replicas"])


def pod_log(rig: rig_env.RigEnv, namespace: str, pod: str) -> str:
    path = rig.logs_dir / "pods" / f"{namespace}_{pod}_agent-worker.log"
    return path.read_text(errors="replace") if path.exists() else ""


def test_a_fleet_whose_workers_cannot_be_read_holds_its_size(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess, tmp_path: Path,
) -> None:  # fmt: skip
    served = tmp_path / "served"  # an empty directory: 200 at / (the probes), 404 at /worker
    served.mkdir()
    manifest = fleet(rig, namespace, minReplicas=1, maxReplicas=8)
    del manifest["spec"]["entrypoint"]
    manifest["spec"]["command"] = [
        sys.executable, "-m", "http.server", str(WORKER_PORT), "--bind", "$(POD_IP)",
    ]  # fmt: skip
    manifest["spec"]["workingDir"] = str(served)
    manifest["spec"]["companion"] = {"mode": "Disabled"}  # probed at /, as without it
    apply(kubectl, namespace, manifest)
    ready = wait_for(
        "the file server's pod ready",
        lambda: live_pods(kubectl, namespace),
        lambda live: len(live) == 1 and all(is_ready(p) for p in live.values()),
        timeout_s=90,
    )
    (pod,) = ready
    assert read_worker(ready[pod]["status"]["podIP"]) is None, "/worker must not be served"
    wait_status(
        kubectl, namespace, "the ready pod counted unknown, not starting",
        lambda s: s.get("unknownWorkers") == [pod],
    )  # fmt: skip
    held = wait_for(
        "ScalingLimited and Degraded both WorkersUnreadable",
        lambda: aw(kubectl, namespace),
        lambda obj: (
            condition(obj, "ScalingLimited").get("reason") == "WorkersUnreadable"
            and condition(obj, "Degraded").get("reason") == "WorkersUnreadable"
        ),
        timeout_s=60,
    )
    degraded = condition(held, "Degraded")
    assert degraded["status"] == "True"
    assert f"{pod}: HTTP 404" in degraded["message"], degraded
    limited = condition(held, "ScalingLimited")
    assert limited["status"] == "True"
    assert f"{pod}: HTTP 404" in limited["message"], limited
    warned = wait_for(
        "the Warning Event of Degraded",
        lambda: events(kubectl, namespace, "WorkersUnreadable"),
        bool,
        timeout_s=30,
    )
    assert any(pod in message for message in warned), warned
    # before the fix, each unknown worker asked for one more: 8 workers within 60 s
    start = sync_rounds(operator)
    sizes: list[int] = []

    def rounds_seen() -> float:
        sizes.append(deployment_replicas(kubectl, namespace))
        return sync_rounds(operator)

    wait_for(
        "15 more sync rounds with the fleet at 1",
        rounds_seen,
        lambda rounds: rounds >= start + 15 or sizes[-1] != 1,
        timeout_s=60,
    )
    assert set(sizes) == {1}, f"the Deployment's replicas over the rounds: {sizes}"
    assert not events(kubectl, namespace, "ScaledUp")
    assert set(live_pods(kubectl, namespace)) == {pod}
    assert aw(kubectl, namespace)["status"]["desiredReplicas"] == 1


def test_replicas_quota_never_let_exist_are_removed_without_retiring_a_worker(
    kubectl: Kubectl, core: client.CoreV1Api, rig: rig_env.RigEnv, namespace: str,
    credentials: str, operator: OperatorProcess,
) -> None:  # fmt: skip
    quota = client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="two-pods"),
        spec=client.V1ResourceQuotaSpec(hard={"pods": "2"}),
    )
    core.create_namespaced_resource_quota(namespace, quota)
    wait_for(
        "the quota's status (enforced from then on)",
        lambda: core.read_namespaced_resource_quota("two-pods", namespace).status,
        lambda state: state is not None and state.hard is not None,
        timeout_s=30,
    )
    apply(kubectl, namespace, fleet(rig, namespace, minReplicas=3, maxReplicas=4))
    wait_for(
        "3 replicas wanted, 2 ready pods, the third refused by the quota",
        lambda: (
            deployment_replicas(kubectl, namespace),
            sum(1 for p in live_pods(kubectl, namespace).values() if is_ready(p)),
            [m for m in events(kubectl, namespace, "FailedCreate") if "exceeded quota" in m],
        ),
        lambda seen: seen[0] == 3 and seen[1] == 2 and bool(seen[2]),
        timeout_s=120,
    )
    wait_status(
        kubectl, namespace, "both workers serving, 3 desired",
        lambda s: s.get("available") == 2 and s.get("desiredReplicas") == 3,
    )  # fmt: skip
    workers = set(live_pods(kubectl, namespace))
    watch = RetireWatch(workers)
    watch.look(pods(kubectl, namespace))
    assert watch.reads == 2, "both workers' /worker read"
    assert not watch.retired
    patch_autoscaling(kubectl, namespace, minReplicas=2)

    def replicas_while_watching() -> int:
        replicas = deployment_replicas(kubectl, namespace)
        watch.look(pods(kubectl, namespace))
        return replicas

    wait_for(
        "the replica the quota never let exist removed",
        replicas_while_watching,
        lambda replicas: replicas == 2 or bool(watch.retired),
        timeout_s=60,
    )
    assert not watch.retired, f"retired, though only an unmade replica had to go: {watch.retired}"
    assert any("3 -> 2 workers" in m for m in events(kubectl, namespace, "ScaledDown"))

    def rounds_while_watching() -> float:
        replicas_while_watching()
        return sync_rounds(operator)

    start = sync_rounds(operator)
    wait_for(
        "5 more sync rounds",
        rounds_while_watching,
        lambda rounds: rounds >= start + 5 or bool(watch.retired),
        timeout_s=30,
    )
    assert not watch.retired, f"retired after the scale-down: {watch.retired}"
    assert deployment_replicas(kubectl, namespace) == 2
    assert {p["metadata"]["name"] for p in pods(kubectl, namespace)} == workers
    assert set(live_pods(kubectl, namespace)) == workers, "no worker pod deleted"
    for name in workers:
        assert RETIRED_LINE not in pod_log(rig, namespace, name), f"{name} was retired"
    assert "scale-down victims" not in operator.logs()


def test_a_scale_down_waits_for_a_rollout_in_progress(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess,
) -> None:  # fmt: skip
    manifest = fleet(rig, namespace, minReplicas=3)
    apply(kubectl, namespace, manifest)
    wait_ready(kubectl, namespace, replicas=3)
    old = set(live_pods(kubectl, namespace))
    watch = RetireWatch(old)
    watch.look(pods(kubectl, namespace))
    assert watch.reads == 3, "the old workers' /worker read"
    # the new pod template's workers take 20 s to start (a startup probe keeps the liveness
    # probe from killing them meanwhile): the rollout lasts about a minute
    del manifest["spec"]["entrypoint"]
    manifest["spec"]["command"] = ["sh", "-c", f"sleep 20; exec {AGENT_WORKER} start {ENTRYPOINT}"]
    manifest["spec"]["startupProbe"] = {
        "httpGet": {"path": "/", "port": "http"},
        "periodSeconds": 2,
        "failureThreshold": 30,
    }
    apply(kubectl, namespace, manifest)
    wait_for(
        "a worker of the new pod template",
        lambda: set(live_pods(kubectl, namespace)) - old,
        bool,
        timeout_s=30,
    )
    patch_autoscaling(kubectl, namespace, minReplicas=1)

    def aw_while_watching() -> dict[str, Any]:
        watch.look(pods(kubectl, namespace))
        return aw(kubectl, namespace)

    held = wait_for(
        "the scale-down held for the rollout",
        aw_while_watching,
        lambda obj: condition(obj, "ScalingLimited").get("reason") == "RolloutInProgress",
        timeout_s=30,
    )
    assert condition(held, "ScalingLimited")["status"] == "True"
    assert held["status"]["desiredReplicas"] == 3
    assert deployment_replicas(kubectl, namespace) == 3
    assert set(live_pods(kubectl, namespace)) & old, "old workers still run"
    assert not events(kubectl, namespace, "ScaledDown")
    seen: list[tuple[int, int]] = []

    def rollout_state() -> set[str]:
        replicas = deployment_replicas(kubectl, namespace)  # first: old pods never come back
        current = pods(kubectl, namespace)
        watch.look(current)
        running_old = [
            p for p in current
            if p["metadata"]["name"] in old and not p["metadata"].get("deletionTimestamp")
        ]  # fmt: skip
        seen.append((replicas, len(running_old)))
        return {p["metadata"]["name"] for p in current} & old

    wait_for(
        "the rollout done, the old pods gone", rollout_state, lambda left: not left, timeout_s=180
    )
    during = [replicas for replicas, running_old in seen if running_old]
    assert during, "the rollout was watched while old workers ran"
    assert set(during) == {3}, f"replicas while old workers ran: {seen}"
    assert not watch.retired, f"old workers retired during the rollout: {watch.retired}"
    for name in old:
        assert RETIRED_LINE not in pod_log(rig, namespace, name), f"{name} was retired"
    wait_for(
        "the fleet scaled down to 1 after the rollout",
        lambda: (deployment_replicas(kubectl, namespace), len(live_pods(kubectl, namespace))),
        lambda sizes: sizes == (1, 1),
        timeout_s=120,
    )
    scaled = events(kubectl, namespace, "ScaledDown")
    assert any("3 -> " in m for m in scaled), scaled
