"""An image with the companion installed (`pip install` of its wheel, `spec.companion.mode:
Installed`) gives an unmodified livekit-agents worker the contract where injection cannot work.

The image is an overlay venv: livekit-agents 1.8.9's cached venv (bench/venv.py) on its path
through a .pth line, and the companion's wheel, built from companion/ for this session,
pip-installed into it as docs/agent-image.md says. The worker runs with `python -I`, which
ignores PYTHONPATH (injection falls back there, test_companion shows) but still reads
site-packages' .pth files, the companion's among them. The operator adds no init container,
volume or PYTHONPATH, only AGENTWORKER_COMPANION=1; the test reads what only the companion
gives: readiness that means registered, the spec's agent name, /worker with the rooms of a call,
the agentworker_worker_* metrics, and the Companion condition.

Then a fleet in mode Installed on the venv without the companion: the AgentWorker says that
the image lacks the package (NotLoaded) and falls back to today's path.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

import agentworker_companion
from bench import venv
from tests import companion_wheel
from tests.e2e.conftest import Kubectl
from tests.e2e.operator.calls import Calls
from tests.e2e.operator.conftest import OperatorProcess, agent_name, condition, get_json
from tests.e2e.operator.test_agentworker import apply, aw, wait_ready
from tests.e2e.operator.test_autoscaling import (
    FAST,
    assert_every_call_completed,
    live_pods,
    pod_by_ip,
    wait_calls_started,
    wait_status,
)
from tests.e2e.operator.test_companion import (
    AGENT_SCRIPT,
    TODAYS_AGENT,
    companion_fleet,
    document,
    get,
    pod_log,
)
from tests.rig import env as rig_env
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

INSTALLED = {"mode": "Installed"}


@pytest.fixture
def operator_args() -> tuple[str, ...]:
    return FAST


@pytest.fixture(scope="session")
def installed_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of an image with livekit-agents and the companion installed."""
    official = venv.ensure_official_venv()
    root = tmp_path_factory.mktemp("image")
    wheel = companion_wheel.build(root / "wheels")
    overlay = root / "venv"
    subprocess.run(
        [str(official), "-m", "venv", "--without-pip", str(overlay)],
        cwd=venv.NEUTRAL_CWD,
        timeout=60,
        check=True,
    )
    python = overlay / "bin" / "python"
    # livekit-agents' venv, and the agent's directory (`python -I` leaves the script's own
    # directory off sys.path, and companion_agent imports official_agent from there)
    addsitedir = f"import site; site.addsitedir({str(companion_wheel.site_packages(official))!r})"
    (companion_wheel.site_packages(python) / "livekit_agents_image.pth").write_text(
        f"{addsitedir}\n{AGENT_SCRIPT.parent}\n"
    )
    companion_wheel.install(wheel, python)
    return python


def template(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    (deployment,) = get_json(kubectl, "deployment", "-n", namespace)["items"]
    found: dict[str, Any] = deployment["spec"]["template"]
    return found


def test_an_image_with_the_companion_installed_gets_the_contract_under_python_dash_i(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess, phone: Calls, installed_python: Path,
) -> None:  # fmt: skip
    fleet = companion_fleet(rig, namespace, installed_python, isolated=True)
    fleet["spec"].update(companion=INSTALLED, replicas=1)  # one worker from the start
    apply(kubectl, namespace, fleet)
    wait_ready(kubectl, namespace, replicas=1, timeout_s=180)
    pod_template = template(kubectl, namespace)
    (container,) = pod_template["spec"]["containers"]
    env = {v["name"]: v.get("value") for v in container["env"]}
    assert "initContainers" not in pod_template["spec"]
    assert (env["AGENTWORKER_COMPANION"], "PYTHONPATH" in env) == ("1", False)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod_template["metadata"]["labels"]["agentworker.dev/metrics"] == "true"

    (pod,) = live_pods(kubectl, namespace)
    ip = {v: k for k, v in pod_by_ip(kubectl, namespace).items()}[pod]
    doc = document(ip)
    # readiness means registered: the pod was Ready, so the worker had registered already
    assert doc["companion"] == agentworker_companion.__version__, doc
    assert (doc["sdk_version"], doc["state"]) == (venv.AGENTS_VERSION, "available"), doc
    assert doc["worker_id"], doc
    assert '"registered worker"' in pod_log(rig, namespace, pod)
    assert doc["agent_name"] == agent_name(namespace) != "set-in-code"
    assert get(ip, "/readyz")[0] == 200
    found = wait_status(
        kubectl, namespace, "the Companion condition",
        lambda s: any(c["type"] == "Companion" and c["status"] == "True"
                      for c in s.get("conditions", [])),
    )  # fmt: skip
    assert found["companion"] == {"mode": "Installed", "state": "Installed"}

    rooms = phone.start(1, hold_s=20)
    wait_calls_started(phone, rooms)
    assert {job["room"] for job in document(ip)["jobs"]} == set(rooms)
    assert "agentworker_worker_active_jobs 1.0" in get(ip, "/metrics")[1]
    assert_every_call_completed(phone, rooms, timeout_s=60, real=False)


def test_an_image_without_the_companion_in_mode_installed_falls_back_and_says_it_lacks_it(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess,
) -> None:  # fmt: skip
    python = venv.ensure_official_venv()
    fleet = companion_fleet(rig, namespace, python, script=TODAYS_AGENT)
    fleet["spec"]["companion"] = INSTALLED
    apply(kubectl, namespace, fleet)
    found = wait_for(
        "the fallback recorded",
        lambda: aw(kubectl, namespace),
        lambda obj: condition(obj, "Companion").get("reason") == "NotLoaded",
        timeout_s=180,
    )
    message = condition(found, "Companion")["message"]
    assert "the image lacks the agentworker-companion package" in message, message
    assert found["status"]["companion"]["mode"] == "Installed"
    assert found["status"]["companion"]["state"] == "Fallback"
    # the fallback's pods are today's: probed at / (livekit-agents' own), and they serve
    wait_ready(kubectl, namespace, replicas=1, timeout_s=180)
    pod_template = template(kubectl, namespace)
    (container,) = pod_template["spec"]["containers"]
    assert "AGENTWORKER_COMPANION" not in {v["name"] for v in container["env"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/"
