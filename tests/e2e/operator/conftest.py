"""Fixtures for the operator's rig tests: the shipped CRD, credentials, the operator as a process.

The operator runs as a real `agent-operator` process watching only the test's namespace and
holding its Lease there, so tests (and anyone else's operator on the rig) never compete.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Kubectl, access_refusal
from tests.e2e.operator import fault_table
from tests.e2e.operator.calls import Calls, calls
from tests.rig import env as rig_env
from tests.waiting import wait_for

REPO_ROOT = rig_env.REPO_ROOT
CRD_FILE = REPO_ROOT / "crds" / "agentworker.dev_agentworkers.yaml"
EXAMPLE_FILE = REPO_ROOT / "examples" / "agentworker.yaml"
AGENT_OPERATOR = Path(sys.executable).with_name("agent-operator")
SECRET_NAME = "livekit-credentials"
SESSION_STARTED = time.time()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fault suite's table, when this run wrote one."""
    table = fault_table.rows(since=SESSION_STARTED)
    if table:
        terminalreporter.write_sep("-", "fault suite: every call counted")
        terminalreporter.write_line(fault_table.render(table))


@pytest.fixture(scope="session")
def fault_rows() -> None:
    """A fresh fault table for this run."""
    fault_table.path().write_text("")


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OperatorProcess:
    """`agent-operator` for one namespace, with start, kill -9 and graceful stop."""

    def __init__(
        self,
        rig: rig_env.RigEnv,
        namespace: str,
        log_path: Path,
        identity: str = "",
        kubeconfig: Path | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.namespace = namespace
        self.identity = identity or f"e2e-{namespace}"
        self.log_path = log_path
        self.health_port = free_port()
        self.metrics_port = free_port()
        self._env = dict(os.environ, KUBECONFIG=str(kubeconfig or rig.kubeconfig))
        self._extra_args = extra_args
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, *, leader: bool = True) -> None:
        """Start it and wait until /healthz answers (and says it leads, unless `leader` False)."""
        args = [
            str(AGENT_OPERATOR),
            f"--namespace={self.namespace}",
            f"--lease-namespace={self.namespace}",
            f"--identity={self.identity}",
            "--health-host=127.0.0.1",
            f"--health-port={self.health_port}",
            "--metrics-host=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            "--log-level=DEBUG",
            *self._extra_args,
        ]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(args, env=self._env, stdout=log, stderr=log)
        wait_for(
            f"operator /healthz{' as leader' if leader else ''} ({self.log_path})",
            self.health,
            lambda answer: answer is not None and (bool(answer["leader"]) or not leader),
            timeout_s=30,
        )

    def health(self) -> dict[str, Any] | None:
        """The /healthz answer, or None when it does not answer."""
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # loopback
                answer: dict[str, Any] = json.loads(response.read())
                return answer
        except OSError:
            return None

    def metrics(self) -> str:
        """The Prometheus exposition text of /metrics."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as response:  # loopback
            text: str = response.read().decode()
            return text

    def kill(self) -> None:
        """SIGKILL, as an OOM kill or node loss would; no cleanup runs."""
        if self._process is not None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=10)
            self._process = None

    def restart_if_exited(self) -> bool:
        """Start it again if it exited (as its Deployment's kubelet would); whether it had."""
        if self._process is None or self._process.poll() is None:
            return False
        self._process = None
        self.start()
        return True

    def stop(self) -> int | None:
        """SIGTERM and wait; the exit code."""
        if self._process is None:
            return None
        self._process.send_signal(signal.SIGTERM)
        try:
            code = self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            code = self._process.wait(timeout=10)
        self._process = None
        return code

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def assert_no_access_errors(self) -> None:
        """Fail when the API server refused the operator anything (401, 403)."""
        self.assert_no_access_errors_but()

    def assert_no_access_errors_but(self, *expected: str) -> None:
        """Fail when the API server refused the operator anything (401, 403) but on lines that
        name one of `expected` (a refusal the test wants)."""
        for line in self.logs().splitlines():
            if any(text in line for text in expected):
                continue
            sign = access_refusal(line)
            assert not sign, f"{sign!r} in the operator log: {line[:2000]}"


@pytest.fixture(scope="session")
def crd(kubectl: Kubectl) -> str:
    """The very CRD file that ships, applied and Established."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    name = "crd/agentworkers.agentworker.dev"
    kubectl("wait", "--for=condition=Established", "--timeout=60s", name)
    return name


@pytest.fixture
def credentials(kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str) -> str:
    """The LiveKit credentials Secret, made from the rig's keys (never printed)."""
    kubectl(
        "create", "secret", "generic", SECRET_NAME, "-n", namespace,
        f"--from-literal=LIVEKIT_API_KEY={rig.livekit_api_key}",
        f"--from-literal=LIVEKIT_API_SECRET={rig.livekit_api_secret}",
    )  # fmt: skip
    return SECRET_NAME


@pytest.fixture
def operator_args() -> tuple[str, ...]:
    """Extra flags of the `operator` fixture's process (a test module may override this)."""
    return ()


@pytest.fixture
def operator(
    rig: rig_env.RigEnv,
    namespace: str,
    crd: str,
    tmp_path: Path,
    operator_args: tuple[str, ...],
) -> Iterator[OperatorProcess]:
    """A running operator watching only this test's namespace."""
    process = OperatorProcess(rig, namespace, tmp_path / "operator.log", extra_args=operator_args)
    process.start()
    try:
        yield process
    finally:
        process.stop()
    process.assert_no_access_errors()


def agent_name(namespace: str) -> str:
    """An agent name of this test's own: dispatches on the shared LiveKit server reach only it."""
    return f"calls-{namespace}"[:100]


@pytest.fixture
def phone(rig: rig_env.RigEnv, namespace: str, tmp_path: Path) -> Iterator[Calls]:
    """Calls to this test's agent, recorded in tmp_path/calls.jsonl."""
    with calls(rig, agent_name(namespace), tmp_path / "calls.jsonl") as running:
        yield running


def example(rig: rig_env.RigEnv, **spec_overrides: Any) -> dict[str, Any]:
    """examples/agentworker.yaml pointed at the rig's LiveKit server, with spec overrides."""
    manifest: dict[str, Any] = yaml.safe_load(EXAMPLE_FILE.read_text())
    manifest["spec"]["livekit"]["url"] = rig.livekit_url
    manifest["spec"].update(spec_overrides)
    return manifest


def get_json(kubectl: Kubectl, *args: str) -> dict[str, Any]:
    """`kubectl get ... -o json` decoded."""
    decoded: dict[str, Any] = json.loads(kubectl("get", *args, "-o", "json").stdout)
    return decoded


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    """The condition of that type in obj's status ({} when absent)."""
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            found: dict[str, Any] = item
            return found
    return {}
