"""The chart's RBAC is enough: the operator runs as its ServiceAccount and reaches Ready.

The ServiceAccount, ClusterRole and Role come from `helm template` of the shipped chart, and the
operator process authenticates with a token of that ServiceAccount only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import Kubectl
from tests.e2e.operator.calls import ENTRYPOINT, calls
from tests.e2e.operator.conftest import REPO_ROOT, OperatorProcess, agent_name, example
from tests.e2e.operator.test_agentworker import apply, wait_ready
from tests.e2e.operator.test_autoscaling import (
    events,
    wait_calls_started,
    wait_status,
    worker_pid,
)
from tests.rig import env as rig_env
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

CHART = REPO_ROOT / "charts" / "agentworker-operator"


@pytest.fixture
def chart_rbac(rig: rig_env.RigEnv, kubectl: Kubectl, namespace: str, crd: str) -> Iterator[str]:
    """The chart's ServiceAccount and RBAC for a release named after the test's namespace."""
    helm = shutil.which("helm", path=f"{rig.bin_path}:{os.environ.get('PATH', '')}")
    assert helm is not None, "the rig provides helm"
    release = namespace[:53]
    rendered = subprocess.run(
        [helm, "template", release, str(CHART), "-n", namespace, "--set", "crds.enabled=false",
         "--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/rbac.yaml"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    kubectl("apply", "-f", "-", stdin=rendered)
    try:
        yield release
    finally:
        kubectl("delete", "--ignore-not-found", "-f", "-", stdin=rendered)


def token_kubeconfig(kubectl: Kubectl, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig for the rig's API server that authenticates as the ServiceAccount only."""
    token = kubectl("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    config = json.loads(kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    config["users"] = [{"name": "operator", "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = "operator"
    path.write_text(yaml.safe_dump(config))
    return path


def test_operator_reaches_ready_with_only_the_charts_rbac(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str, chart_rbac: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    kubeconfig = token_kubeconfig(kubectl, namespace, chart_rbac, tmp_path / "sa.kubeconfig")
    whoami = json.loads(
        kubectl(f"--kubeconfig={kubeconfig}", "auth", "whoami", "-o", "json").stdout
    )
    assert whoami["status"]["userInfo"]["username"] == (
        f"system:serviceaccount:{namespace}:{chart_rbac}"
    )
    release = chart_rbac  # the chart's Roles name the release's Lease and control key
    args = (f"--lease-name={release}", f"--control-key-secret={release}-control-key")
    process = OperatorProcess(
        rig, namespace, tmp_path / "operator.log", kubeconfig=kubeconfig, extra_args=args
    )
    process.start()
    try:
        apply(kubectl, namespace, example(rig, replicas=1))
        wait_ready(kubectl, namespace, replicas=1)
        events = kubectl("get", "events", "-n", namespace, "-o", "json").stdout
        assert "WorkersReady" in events, "the operator may post Events"
    finally:
        process.stop()
    process.assert_no_access_errors()
    assert "Handler 'on_change' succeeded" in process.logs(), "this operator did the work"


def test_without_read_access_to_the_credentials_call_recovery_says_so_in_an_event(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str, chart_rbac: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    """The chart's default RBAC reads no credentials Secret; an AgentWorker that asks for call
    recovery is told why none happens when a worker dies with a call."""
    kubeconfig = token_kubeconfig(kubectl, namespace, chart_rbac, tmp_path / "sa.kubeconfig")
    args = (
        f"--lease-name={chart_rbac}",
        f"--control-key-secret={chart_rbac}-control-key",
        "--sync-period=1",
    )
    process = OperatorProcess(
        rig, namespace, tmp_path / "operator.log", kubeconfig=kubeconfig, extra_args=args
    )
    process.start()
    try:
        with calls(rig, agent_name(namespace), tmp_path / "calls.jsonl") as phone:
            manifest = example(
                rig, agentName=agent_name(namespace), entrypoint=ENTRYPOINT, replicas=1,
                recovery={"redispatch": True},
            )  # fmt: skip
            apply(kubectl, namespace, manifest)
            wait_ready(kubectl, namespace, replicas=1)
            rooms = phone.start_watched(1, hold_s=120)
            started = wait_calls_started(phone, rooms)
            wait_status(kubectl, namespace, "the call observed", lambda s: s["activeJobs"] == 1)
            pid = worker_pid(started[rooms[0]]["pod_ip"])
            os.killpg(os.getpgid(pid), signal.SIGKILL)  # the worker dies with its call
            message = wait_for(
                "a RecoveryForbidden Warning Event",
                lambda: events(kubectl, namespace, "RecoveryForbidden"),
                bool,
                timeout_s=60,
            )[0]
            assert "rbac.readCredentialSecrets" in message
            assert "livekit-credentials" in message
            phone.hang_up(rooms[0])
    finally:
        process.stop()
    process.assert_no_access_errors_but("livekit-credentials")
