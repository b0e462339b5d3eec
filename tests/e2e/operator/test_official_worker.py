"""The official livekit-agents worker, unmodified and without the companion (mode Disabled), run and
scaled by the operator on the rig.

livekit-agents comes from PyPI into its own virtual environment (bench/venv.py, the pin the
runtime benchmark measures against); the AgentWorker runs it with spec.command. The operator
probes it at /, reads its /worker (a sparse document: protobuf leaves out zero fields), scales
it up when its calls fill it, and scales it down without a handshake (it has no POST /retire):
the idle worker gets the lowest pod-deletion-cost and the SIGTERM drain does the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import venv
from tests.e2e.conftest import Kubectl
from tests.e2e.operator.calls import Calls
from tests.e2e.operator.conftest import REPO_ROOT, OperatorProcess, agent_name, example
from tests.e2e.operator.test_agentworker import apply, wait_ready
from tests.e2e.operator.test_autoscaling import (
    FAST,
    assert_every_call_completed,
    events,
    live_pods,
    pod_by_ip,
    status_of,
    wait_calls_started,
    wait_status,
)
from tests.rig import env as rig_env
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

AGENT_SCRIPT = REPO_ROOT / "tests" / "e2e" / "operator" / "official_agent.py"


@pytest.fixture(scope="session")
def official_python() -> Path:
    """livekit-agents' own interpreter (installed from PyPI on the first run)."""
    return venv.ensure_official_venv()


@pytest.fixture
def operator_args() -> tuple[str, ...]:
    """The operator observes the workers every second (the default is 5 s)."""
    return FAST


def official_fleet(rig: rig_env.RigEnv, namespace: str, python: Path) -> dict[str, Any]:
    manifest = example(
        rig,
        agentName=agent_name(namespace),
        command=[str(python), str(AGENT_SCRIPT), "start"],
        # the rig runs pods in the repository by default, where operator/ would shadow the
        # standard library's operator module in livekit-agents' forkserver
        workingDir=str(AGENT_SCRIPT.parent),
        drainTimeout="5m",
        numIdleProcesses=1,
        replicas=1,  # the example's 2 would start a pod the autoscaler then removes
        companion={"mode": "Disabled"},  # today's path, without it (test_companion has it)
    )
    del manifest["spec"]["entrypoint"]
    manifest["spec"]["autoscaling"] = {
        "enabled": True,
        "minReplicas": 1,
        "maxReplicas": 2,
        "targetLoad": 0.5,
        "scaleDown": {"stabilizationWindow": "3s", "stepPods": 4, "period": "5s"},
    }
    return manifest


def wait_registered(rig: rig_env.RigEnv, namespace: str, pod: str) -> None:
    """Waits for the pod's livekit-agents worker to register with LiveKit. It answers at / (its
    readiness) and at /worker before then, and the server drops a dispatch that finds no
    registered worker: a call placed earlier would never be answered."""
    log = rig.logs_dir / "pods" / f"{namespace}_{pod}_agent-worker.log"
    wait_for(
        f"{pod} registered with LiveKit",
        lambda: log.read_text() if log.exists() else "",
        lambda text: '"registered worker"' in text,
        timeout_s=60,
    )


def test_the_official_worker_takes_calls_scales_up_and_its_idle_worker_is_scaled_down(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess, phone: Calls, official_python: Path,
) -> None:  # fmt: skip
    apply(kubectl, namespace, official_fleet(rig, namespace, official_python))
    wait_ready(kubectl, namespace, replicas=1, timeout_s=180)
    wait_status(kubectl, namespace, "the official /worker read", lambda s: s.get("available") == 1)
    (first,) = live_pods(kubectl, namespace)
    wait_registered(rig, namespace, first)
    busy: list[str] = []
    for _ in range(3):  # 3 of 4 calls: load 0.75, above the threshold 0.7
        # one at a time: livekit-agents may answer "not available" to a job offered while it
        # starts another, and the server then drops that dispatch
        busy += phone.start(1, hold_s=25)
        wait_calls_started(phone, busy)
    wait_status(
        kubectl, namespace, "a second official worker",
        lambda s: s.get("desiredReplicas") == 2 and s.get("readyReplicas") == 2
        and s.get("available") == 1,
        timeout_s=180,
    )  # fmt: skip
    assert any("1 -> 2 workers" in m for m in events(kubectl, namespace, "ScaledUp"))
    (new,) = set(live_pods(kubectl, namespace)) - {first}
    wait_registered(rig, namespace, new)
    later = phone.start(1, hold_s=5)
    started = wait_calls_started(phone, later)
    second = pod_by_ip(kubectl, namespace)[started[later[0]]["pod_ip"]]
    assert second != first, "the new worker took the new call"
    assert_every_call_completed(phone, busy + later, timeout_s=120, real=False)
    remaining = wait_for(
        "the idle official worker scaled down",
        lambda: live_pods(kubectl, namespace),
        lambda live: len(live) == 1,
        timeout_s=120,
    )
    assert any("2 -> 1 workers" in m for m in events(kubectl, namespace, "ScaledDown"))
    assert status_of(kubectl, namespace)["desiredReplicas"] == 1
    assert len(remaining) == 1
