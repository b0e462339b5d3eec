"""The rig's cluster as the scaling benchmark uses it: kubectl, namespaces, the operator, logs.

Owns the I/O of `bench.scaling`: running the rig's kubectl, making and deleting a namespace,
running `agent-operator` as a process in its own process group, watching a namespace's pods
(the moment each one appears, is marked for deletion and is gone), and reading the JSON log
lines the operator and the workers write. It decides nothing and measures nothing by itself.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import yaml

from agentworker_operator import builders
from bench.manifests import Manifest, build_credentials_secret
from tests.rig import env as rig_env

T = TypeVar("T")
KUBECTL_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
AGENT_OPERATOR = Path(sys.executable).with_name("agent-operator")
CRD_FILE = rig_env.REPO_ROOT / "crds" / "agentworker.dev_agentworkers.yaml"


class ClusterError(RuntimeError):
    """A kubectl call failed or a state was not reached in time; the message says which."""


def wait_until(
    what: str,
    probe: Callable[[], T],
    ok: Callable[[T], bool],
    *,
    timeout_s: float,
    interval_s: float,
) -> T:
    """Call `probe` until `ok(value)` and return that value; ClusterError with the last one."""
    deadline = time.monotonic() + timeout_s
    last: object = "<never observed>"
    while True:
        value = probe()
        if ok(value):
            return value
        last = value
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout_s:.0f}s waiting for {what}; last: {last}")
        time.sleep(interval_s)


class Kubectl:
    """The rig's kubectl with its kubeconfig; every call is bounded."""

    def __init__(self, rig: rig_env.RigEnv) -> None:
        self._env = dict(os.environ, KUBECONFIG=str(rig.kubeconfig))
        self._env["PATH"] = f"{rig.bin_path}:{self._env.get('PATH', '')}"

    @property
    def environ(self) -> dict[str, str]:
        return dict(self._env)

    def __call__(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout_s: float = 0.0
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["kubectl", *args],
            env=self._env,
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout_s or KUBECTL_TIMEOUT_S,
            cwd=rig_env.REPO_ROOT,
        )
        if check and done.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args[:3])} ... failed: {done.stderr.strip()}")
        return done

    def apply(self, manifest: Manifest) -> None:
        self("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(manifest))

    def get_json(self, *args: str) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self("get", *args, "-o", "json").stdout)
        return found


def ensure_crd(kubectl: Kubectl) -> str | None:
    """The AgentWorker CRD that ships, applied and Established (as the e2e tests do).

    When the file does not apply (it may be mid-edit) and a CRD is installed, that one is used
    and the reason is returned for the results; without any CRD, ClusterError."""
    name = "crd/agentworkers.agentworker.dev"
    applied = kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE), check=False
    )
    kubectl("wait", "--for=condition=Established", "--timeout=60s", name)
    if applied.returncode == 0:
        return None
    return f"{CRD_FILE.name} did not apply, the installed CRD was used: {applied.stderr.strip()}"


@contextlib.contextmanager
def namespace(
    kubectl: Kubectl,
    name: str,
    *,
    delete_timeout_s: float = 180.0,
    credentials: rig_env.RigEnv | None = None,
) -> Iterator[str]:
    """A fresh namespace (with its default ServiceAccount, and the LiveKit credentials Secret
    of `credentials`' server when given), deleted on the way out."""
    kubectl("create", "namespace", name)
    try:
        wait_until(
            f"serviceaccount default in {name}",
            lambda: kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode,
            lambda code: code == 0,
            timeout_s=60,
            interval_s=0.5,
        )
        if credentials is not None:
            kubectl.apply(
                build_credentials_secret(
                    name,
                    api_key=credentials.livekit_api_key,
                    api_secret=credentials.livekit_api_secret,
                )
            )
        yield name
    finally:
        kubectl(
            "delete", "namespace", name, "--ignore-not-found", f"--timeout={delete_timeout_s:.0f}s",
            check=False, timeout_s=delete_timeout_s + 10,
        )  # fmt: skip


class OperatorProcess:
    """`agent-operator` watching one namespace, as the brief runs it (default sync period)."""

    def __init__(
        self, kubectl: Kubectl, namespace: str, log_path: Path, extra_args: Sequence[str] = ()
    ) -> None:
        self.namespace = namespace
        self.log_path = log_path
        self._extra_args = tuple(extra_args)
        self._env = kubectl.environ
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [
            str(AGENT_OPERATOR),
            f"--namespace={self.namespace}",
            f"--lease-namespace={self.namespace}",
            "--identity=bench",
            "--health-port=0",
            "--metrics-port=0",
            *self._extra_args,
        ]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                args, env=self._env, stdout=log, stderr=log, start_new_session=True
            )

    def stop(self) -> None:
        """SIGTERM to its process group, a bounded wait, then SIGKILL; idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def records(self) -> list[dict[str, Any]]:
        """The operator's JSON log lines so far (other lines skipped)."""
        return json_lines(self.log_path)

    def __enter__(self) -> OperatorProcess:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


@dataclass(frozen=True, slots=True)
class PodEvent:
    """One watch event of a pod, stamped with the Unix time it was read."""

    t: float
    kind: str
    """ADDED, MODIFIED or DELETED."""
    name: str
    deleting: bool
    """The pod carries a deletionTimestamp (SIGTERM sent, grace period running)."""
    ip: str
    """The pod's IP ("" before it has one)."""


class PodWatch:
    """`kubectl get pods --watch` on a label selector, read by a thread; stop() ends it."""

    _FORMAT = (
        "{.type}|{.object.metadata.name}|{.object.metadata.deletionTimestamp}"
        '|{.object.status.podIP}{"\\n"}'
    )

    def __init__(self, kubectl: Kubectl, namespace: str, selector: str) -> None:
        args = ["kubectl", "get", "pods", "-n", namespace, "-l", selector, "--watch"]
        args += ["--output-watch-events", "-o", f"jsonpath={self._FORMAT}"]
        self._process = subprocess.Popen(
            args, env=kubectl.environ, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self._events: list[PodEvent] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, name=f"pods-{namespace}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        stream: IO[str] | None = self._process.stdout
        assert stream is not None
        for line in stream:
            kind, name, deletion, ip = [*line.rstrip("\n").split("|"), "", "", ""][:4]
            if kind in ("ADDED", "MODIFIED", "DELETED") and name:
                with self._lock:
                    self._events.append(PodEvent(time.time(), kind, name, bool(deletion), ip))

    def events(self) -> list[PodEvent]:
        with self._lock:
            return list(self._events)

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._thread.join(timeout=10)

    def __enter__(self) -> PodWatch:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a log file, one a line; lines that are not JSON are skipped."""
    if not path.exists():
        return []
    found: list[dict[str, Any]] = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                record = json.loads(line)
                if isinstance(record, dict):
                    found.append(record)
    return found


def unix_time(stamp: str) -> float:
    """An ISO 8601 time with an offset (the operator's and the runtime's logs) as Unix time."""
    return datetime.datetime.fromisoformat(stamp).timestamp()


def pod_log(rig: rig_env.RigEnv, namespace: str, pod: str, container: str) -> Path:
    """Where the process runner writes a pod container's output."""
    return rig.logs_dir / "pods" / f"{namespace}_{pod}_{container}.log"


def worker_log_time(path: Path, message: str) -> float | None:
    """Unix time of the first line of the runtime's JSON log with this message, or None."""
    for record in json_lines(path):
        if record.get("message") == message and isinstance(record.get("time"), str):
            return unix_time(record["time"])
    return None


def agentworker_status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    """The AgentWorker's status ({} before the operator wrote one)."""
    found: dict[str, Any] = (
        kubectl.get_json("agentworker", name, "-n", namespace).get("status") or {}
    )
    return found


def agentworker_ready(found: dict[str, Any], replicas: int) -> bool:
    """Ready=True with exactly `replicas` ready workers."""
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in found.get("conditions", [])
    )
    return ready and found.get("readyReplicas") == replicas


def wait_agentworker_ready(kubectl: Kubectl, namespace: str, name: str, replicas: int) -> None:
    wait_until(
        f"AgentWorker {name} Ready with {replicas} ready workers",
        lambda: agentworker_status(kubectl, namespace, name),
        lambda found: agentworker_ready(found, replicas),
        timeout_s=READY_TIMEOUT_S,
        interval_s=1.0,
    )


def agentworker_pods(name: str) -> str:
    """The label selector of an AgentWorker's pods."""
    return f"{builders.LABEL_INSTANCE}={name}"


def scale_events(kubectl: Kubectl, namespace: str, name: str, reason: str) -> list[str]:
    """Messages of the AgentWorker's Events with this reason, oldest first."""
    items = kubectl.get_json("events", "-n", namespace)["items"]
    mine = [
        e
        for e in items
        if e.get("reason") == reason and (e.get("involvedObject") or {}).get("name") == name
    ]
    mine.sort(key=lambda e: str(e.get("eventTime") or e.get("firstTimestamp") or ""))
    return [str(e.get("message", "")) for e in mine]
