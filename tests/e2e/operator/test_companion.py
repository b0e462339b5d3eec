"""An unmodified livekit-agents worker gets the operator's whole contract through the companion.

For each tested livekit-agents line (bench/venv.py's TESTED_VERSIONS, each in its own cached
venv), an AgentWorker runs `companion_agent.py` (written as LiveKit's current docs teach, with
its own agent name in code and livekit-agents' default address) with `spec.command` and the
default companion mode (Inject). The operator's init container copies the companion into the
pod's emptyDir; the worker's Python loads it from PYTHONPATH. The test reads what only the
companion gives: readiness that means registered, the spec's agent name and the pod's address,
/worker with the rooms, the agentworker_worker_* metrics, and a scale-down that asks the idle
worker to retire (POST /retire) and keeps the busy one, checked by pod name.

Then a fleet whose Python ignores PYTHONPATH (`python -I`) cannot load it: the AgentWorker says
so (Companion condition NotLoaded) and falls back to today's path, and its worker (an agent that
reads AGENT_NAME and POD_IP itself, as that path needs) serves.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bench import venv
from tests.e2e.conftest import Kubectl
from tests.e2e.operator.calls import Calls
from tests.e2e.operator.conftest import (
    REPO_ROOT,
    OperatorProcess,
    agent_name,
    condition,
)
from tests.e2e.operator.test_agentworker import apply, aw, wait_ready
from tests.e2e.operator.test_autoscaling import (
    FAST,
    assert_every_call_completed,
    events,
    live_pods,
    pod_by_ip,
    wait_calls_started,
    wait_status,
)
from tests.e2e.operator.test_official_worker import official_fleet, wait_registered
from tests.rig import env as rig_env
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

AGENT_SCRIPT = REPO_ROOT / "tests" / "e2e" / "operator" / "companion_agent.py"
TODAYS_AGENT = AGENT_SCRIPT.with_name("official_agent.py")
"""An agent that applies AGENT_NAME and POD_IP itself, as one must without the companion."""


@pytest.fixture
def operator_args() -> tuple[str, ...]:
    return FAST


def companion_fleet(
    rig: rig_env.RigEnv,
    namespace: str,
    python: Path,
    *,
    isolated: bool = False,
    script: Path = AGENT_SCRIPT,
) -> dict[str, Any]:
    """test_official_worker's fleet, with `script` and the default companion mode."""
    manifest = official_fleet(rig, namespace, python)
    manifest["spec"]["command"] = [str(python), *(["-I"] if isolated else []), str(script), "start"]
    del manifest["spec"]["companion"]
    return manifest


def get(ip: str, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{ip}:8081{path}", timeout=5) as answer:
            return int(answer.status), answer.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


def document(ip: str) -> dict[str, Any]:
    status, body = get(ip, "/worker")
    assert status == 200, body
    found: dict[str, Any] = json.loads(body)
    return found


def pod_log(rig: rig_env.RigEnv, namespace: str, pod: str) -> str:
    path = rig.logs_dir / "pods" / f"{namespace}_{pod}_agent-worker.log"
    return path.read_text() if path.exists() else ""


@pytest.mark.parametrize("version", venv.TESTED_VERSIONS)
def test_an_unmodified_official_worker_gets_readiness_rooms_metrics_options_and_the_handshake(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess, phone: Calls, version: str,
) -> None:  # fmt: skip
    python = venv.ensure_official_venv(version)
    apply(kubectl, namespace, companion_fleet(rig, namespace, python))
    wait_ready(kubectl, namespace, replicas=1, timeout_s=180)
    (first,) = live_pods(kubectl, namespace)
    ip = {v: k for k, v in pod_by_ip(kubectl, namespace).items()}[first]
    doc = document(ip)
    # readiness means registered: the pod was Ready, so the worker had registered already
    assert doc["companion"], doc
    assert doc["sdk_version"] == version, doc
    assert doc["state"] == "available", doc
    assert doc["worker_id"], doc
    assert '"registered worker"' in pod_log(rig, namespace, first)
    # the spec's options over the code's: the agent name, and the pod's own address
    assert doc["agent_name"] == agent_name(namespace) != "set-in-code"
    assert doc["load_threshold"] == 0.7, doc
    assert doc["idle_processes"] == 1, doc
    assert get(ip, "/readyz")[0] == 200
    wait_status(
        kubectl, namespace, "the Companion condition",
        lambda s: any(c["type"] == "Companion" and c["status"] == "True"
                      for c in s.get("conditions", [])),
    )  # fmt: skip

    busy: list[str] = []
    for _ in range(3):  # 3 of 4 calls: load 0.75, above the threshold 0.7
        busy += phone.start(1, hold_s=45)
        wait_calls_started(phone, busy)
    rooms = {job["room"] for job in document(ip)["jobs"]}
    assert rooms == set(busy), "/worker lists the rooms of its calls"
    metrics = get(ip, "/metrics")[1]
    assert "agentworker_worker_active_jobs 3.0" in metrics, metrics
    wait_status(
        kubectl, namespace, "a second worker",
        lambda s: s.get("desiredReplicas") == 2 and s.get("readyReplicas") == 2
        and s.get("available") == 1,
        timeout_s=180,
    )  # fmt: skip
    (second,) = set(live_pods(kubectl, namespace)) - {first}
    # a Ready pod takes calls at once (no wait for its registration, unlike without it)
    later = phone.start(1, hold_s=60)
    started = wait_calls_started(phone, later)
    assert pod_by_ip(kubectl, namespace)[started[later[0]]["pod_ip"]] == second

    # the first worker's calls end; the second still holds its call: the idle one must go
    assert_every_call_completed(phone, busy, timeout_s=120, real=False)
    remaining = wait_for(
        "the idle worker scaled down",
        lambda: live_pods(kubectl, namespace),
        lambda live: len(live) == 1,
        timeout_s=120,
    )
    assert set(remaining) == {second}, "the busy worker stays, the idle one goes"
    assert "retired: taking no new job" in pod_log(rig, namespace, first)
    assert "retired: taking no new job" not in pod_log(rig, namespace, second)
    assert any("2 -> 1 workers" in m for m in events(kubectl, namespace, "ScaledDown"))
    assert_every_call_completed(phone, later, timeout_s=120, real=False)


def test_a_worker_that_cannot_load_it_falls_back_and_the_agentworker_says_why(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess, phone: Calls,
) -> None:  # fmt: skip
    python = venv.ensure_official_venv()
    # python -I ignores PYTHONPATH: the injected companion is never imported
    fleet = companion_fleet(rig, namespace, python, isolated=True, script=TODAYS_AGENT)
    apply(kubectl, namespace, fleet)
    found = wait_for(
        "the fallback recorded",
        lambda: aw(kubectl, namespace),
        lambda obj: condition(obj, "Companion").get("reason") == "NotLoaded",
        timeout_s=180,
    )
    assert "did not load the companion" in condition(found, "Companion")["message"]
    assert found["status"]["companion"]["state"] == "Fallback"
    # the fallback's pods are probed at / (livekit-agents' own) and serve
    wait_ready(kubectl, namespace, replicas=1, timeout_s=180)
    deployment = json.loads(kubectl("get", "deployment", "-n", namespace, "-o", "json").stdout)
    (item,) = deployment["items"]
    template = item["spec"]["template"]
    assert "initContainers" not in template["spec"]
    assert template["metadata"]["labels"]["agentworker.dev/metrics"] == "false"
    (pod,) = live_pods(kubectl, namespace)
    wait_registered(rig, namespace, pod)  # readiness at / comes before it, on this path
    rooms = phone.start(1, hold_s=3)
    wait_calls_started(phone, rooms)
    assert_every_call_completed(phone, rooms, timeout_s=60, real=False)
