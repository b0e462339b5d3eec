"""One pod of the process runner: its containers as local processes, probes, status, deletion.

Test infrastructure only. Each pod has a thread that owns its processes; the watch thread only
hands it the newest pod object. Its projected volumes under /var/run/secrets (the service account
token) are written before any container starts and renewed while it runs, and its emptyDir
volumes under /agentworker-companion are made then and kept until the pod goes (`volumes.py`); a
container that mounts one runs in its own mount namespace with the volume bind-mounted at its
mountPath. Init containers run in order before the app containers. A pod whose containers a
previous runner left running is adopted (`adoption.py`), not started again.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.rig import adoption, kubelet_env, projected, volumes
from tests.rig.env import REPO_ROOT

log = logging.getLogger("rig.pod")
HOST_IP = "127.0.0.1"
TICK_S = 0.25
BACKOFF_BASE_S, BACKOFF_CAP_S = 1.0, 30.0  # a kubelet uses 10 s and 300 s; tests need faster


Process = subprocess.Popen[bytes] | adoption.AdoptedProcess


class Addresses(Protocol):
    def take(self, wanted: str | None) -> str: ...
    def give_back(self, ip: str) -> None: ...


@dataclass(frozen=True, slots=True)
class NodeContext:
    """What every pod of the node shares: the API server's address, the volume root, tools."""

    services: dict[str, str]
    """`kubelet_env.service_env` of the API server, given to every container."""
    root: Path
    """The runner's own directory (the kubelet's --root-dir): per-pod volume directories."""
    unshare: str
    """Path of util-linux unshare, which runs a container in its own mount namespace."""
    nsenter: str
    """Path of util-linux nsenter, which runs exec probes in the container's mount namespace."""


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class ProbeState:
    successes: int = 0
    failures: int = 0
    next_at: float = 0.0
    passed: bool = False


@dataclass
class Container:
    spec: dict[str, Any]
    init: bool = False
    proc: Process | None = None
    env: dict[str, str] = field(default_factory=dict)
    restart_count: int = 0
    next_start: float = 0.0
    started_at: str = ""
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    completed: bool = False
    probes: dict[str, ProbeState] = field(default_factory=dict)
    log: IO[bytes] | None = None
    namespaced: bool = False
    """Runs in its own mount namespace (it mounts an emulated volume)."""

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def started(self) -> bool:
        return self.running and (
            "startupProbe" not in self.spec or self.probes.get("startupProbe", ProbeState()).passed
        )

    @property
    def ready(self) -> bool:
        if not self.started:
            return False
        return "readinessProbe" not in self.spec or self.probes["readinessProbe"].passed


def signal_main(proc: Process, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(proc.pid, signum)


def signal_group(proc: Process, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


def stop_processes(procs: list[Process], grace_s: float) -> None:
    """SIGTERM, wait up to the grace period, then SIGKILL: what a kubelet does.

    As a container runtime does, SIGTERM goes to the container's main process alone (its
    children hear of it only through it), and whatever is left of the container when the main
    process exits or the grace period ends is SIGKILLed, as the kernel does to a PID namespace
    whose init exits.
    """
    alive = [p for p in procs if p.poll() is None]
    for proc in alive:
        signal_main(proc, signal.SIGTERM)
    deadline = time.monotonic() + max(grace_s, 0.0)
    while any(p.poll() is None for p in alive) and time.monotonic() < deadline:
        time.sleep(0.05)
    for proc in alive:
        signal_group(proc, signal.SIGKILL)  # the main process, if still there, and its leftovers
        proc.wait()


class PodProcess(threading.Thread):
    """Runs one pod until it is deleted (or, with restartPolicy Never/OnFailure, completes)."""

    def __init__(
        self,
        api: client.ApiClient,
        pod: dict[str, Any],
        addresses: Addresses,
        logs: Path,
        on_gone: Callable[[], object],
        node: NodeContext,
    ) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.core = client.CoreV1Api(api)
        self.pod = pod
        self.deleted = False
        self.addresses = addresses
        self.logs = logs
        self.on_gone = on_gone
        self.node = node
        self.volumes = volumes.PodVolumes(self.core, pod, node.root)
        self.ip = addresses.take(pod.get("status", {}).get("podIP"))
        spec = pod["spec"]
        self.inits = [Container(c, init=True) for c in spec.get("initContainers", [])]
        self.apps = [Container(c) for c in spec.get("containers", [])]
        self.transitions: dict[str, tuple[str, str]] = {}
        self.last_status: dict[str, Any] | None = None
        self.start_time = now_iso()
        self.lock = threading.Lock()
        self.adopted = self.adopt()

    # -- called from the watch thread -------------------------------------------------------
    def update(self, pod: dict[str, Any], deleted: bool) -> None:
        self.pod = pod
        self.deleted = self.deleted or deleted

    def kill_all(self, grace_s: float) -> None:
        with self.lock:
            stop_processes([c.proc for c in self.inits + self.apps if c.proc], grace_s)

    # -- the pod's own thread ---------------------------------------------------------------
    @property
    def key(self) -> str:
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"

    def adopt(self) -> bool:
        """Take over the containers a previous runner left running; whether there was one."""
        previous = adoption.statuses(self.pod)
        status = self.pod.get("status") or {}
        adopted = False
        for container in self.inits + self.apps:
            before = previous.get(container.name)
            if before is None:
                continue
            container.restart_count = int(before.get("restartCount") or 0)
            container.last_state = dict(before.get("lastState") or {})
            terminated = (before.get("state") or {}).get("terminated")
            if container.init and terminated and terminated.get("exitCode") == 0:
                container.completed, container.state = True, {"terminated": terminated}
                continue
            pid = adoption.pid_of(before)
            if pid is None or not adoption.adoptable(pid, self.pod["metadata"]["name"]):
                continue
            self.restore(container, pid, before)
            adopted = True
        if adopted:
            self.start_time = status.get("startTime") or self.start_time
            for cond in status.get("conditions", []):
                self.transitions[cond["type"]] = (cond["status"], cond["lastTransitionTime"])
        return adopted

    def restore(self, container: Container, pid: int, before: Mapping[str, Any]) -> None:
        """One adopted container: its process, env, start time and probe results as they were."""
        proc = adoption.AdoptedProcess(pid)
        container.proc = proc
        container.started_at = before["state"]["running"].get("startedAt") or now_iso()
        container.state = {"running": {"startedAt": container.started_at}}
        container.env = adoption.environment(pid)
        container.namespaced = adoption.own_mount_namespace(pid)
        passed = {
            "startupProbe": bool(before.get("started")),
            "livenessProbe": True,
            "readinessProbe": bool(before.get("ready")),
        }
        container.probes = {
            kind: ProbeState(passed=passed[kind], next_at=time.monotonic())
            for kind in passed
            if kind in container.spec
        }
        log.info("pod %s: adopted %s (pid %s)", self.key, container.name, pid)

    def run(self) -> None:
        if self.adopted:
            try:  # the volumes of adopted containers keep being renewed
                self.volumes.set_up(self.ip, HOST_IP, self.lookup)
            except (projected.VolumeError, kubelet_env.ContainerConfigError, ApiException) as error:
                log.warning("pod %s: volumes of adopted containers: %s", self.key, error)
        try:
            while True:
                if self.deleted or self.pod["metadata"].get("deletionTimestamp"):
                    self.terminate()
                    return
                with self.lock:
                    self.step()
                self.volumes.renew(self.ip, HOST_IP, self.lookup)
                self.publish()
                if self.finished():
                    return
                time.sleep(TICK_S)
        except Exception:
            log.exception("pod %s: runner thread failed", self.key)
        finally:
            self.volumes.remove()
            self.addresses.give_back(self.ip)
            self.on_gone()

    def step(self) -> None:
        pending_init = next((c for c in self.inits if not c.completed), None)
        if pending_init is not None:
            self.tend(pending_init)
            return
        for container in self.apps:
            self.tend(container)
            if container.running:
                self.run_probes(container)

    def restart_policy(self) -> str:
        return str(self.pod["spec"].get("restartPolicy", "Always"))

    def tend(self, container: Container) -> None:
        code = container.proc.poll() if container.proc is not None else None
        if code is not None:
            self.on_exit(container, code)
        if (
            container.proc is None
            and not container.completed
            and time.monotonic() >= container.next_start
        ):
            self.launch(container)

    def launch(self, container: Container) -> None:
        if not self.volumes.ready:
            try:
                self.volumes.set_up(self.ip, HOST_IP, self.lookup)
            except (projected.VolumeError, kubelet_env.ContainerConfigError, ApiException) as error:
                log.warning("pod %s: MountVolume.SetUp failed: %s", self.key, error)
                waiting = {"reason": "ContainerCreating", "message": str(error)}
                container.state = {"waiting": waiting}
                container.next_start = time.monotonic() + 2.0
                return
        try:
            env = kubelet_env.container_env(
                self.pod, container.spec, self.ip, HOST_IP, self.lookup, self.node.services
            )
            argv = kubelet_env.command_line(container.spec, env)
        except kubelet_env.ContainerConfigError as error:
            container.state = {
                "waiting": {"reason": "CreateContainerConfigError", "message": str(error)}
            }
            container.next_start = time.monotonic() + 2.0
            return
        mounts = self.volumes.mounts(container.spec)
        for mount in mounts:  # an empty mount point on the host, under an emulated prefix only
            Path(mount.target).mkdir(parents=True, exist_ok=True)
        container.namespaced = bool(mounts)
        argv = projected.in_mount_namespace(mounts, argv, self.node.unshare)
        base = {
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "HOSTNAME": self.pod["metadata"]["name"],
            "PYTHONUNBUFFERED": "1",
        }
        container.env = {**base, **env}
        meta = self.pod["metadata"]
        path = self.logs / f"{meta['namespace']}_{meta['name']}_{container.name}.log"
        container.log = path.open("ab")
        try:
            container.proc = subprocess.Popen(
                argv,
                env=container.env,
                cwd=container.spec.get("workingDir") or REPO_ROOT,
                stdout=container.log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as error:
            container.state = {"waiting": {"reason": "RunContainerError", "message": str(error)}}
            self.schedule_restart(container, exit_code=128)
            return
        container.started_at = now_iso()
        container.state = {"running": {"startedAt": container.started_at}}
        container.probes = {
            kind: ProbeState(
                next_at=time.monotonic() + float(container.spec[kind].get("initialDelaySeconds", 0))
            )
            for kind in ("startupProbe", "livenessProbe", "readinessProbe")
            if kind in container.spec
        }
        log.info(
            "pod %s: started %s (pid %s) on %s",
            self.key,
            container.name,
            container.proc.pid,
            self.ip,
        )

    def on_exit(self, container: Container, code: int) -> None:
        terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": container.started_at,
            "finishedAt": now_iso(),
        }
        container.proc = None
        container.last_state = {"terminated": terminated}
        container.state = {"terminated": terminated}
        log.info("pod %s: %s exited with %s", self.key, container.name, code)
        policy = self.restart_policy()
        if container.init and code == 0:
            container.completed = True
        elif policy == "Always" or (policy == "OnFailure" and code != 0):
            self.schedule_restart(container, code)
        else:
            container.completed = True

    def schedule_restart(self, container: Container, exit_code: int) -> None:
        delay = min(BACKOFF_BASE_S * 2**container.restart_count, BACKOFF_CAP_S)
        container.restart_count += 1
        container.next_start = time.monotonic() + delay
        container.state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": (
                    f"back-off {delay:.0f}s restarting failed container (exit code {exit_code})"
                ),
            }
        }

    def lookup(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        try:
            if kind == "Secret":
                secret = self.core.read_namespaced_secret(name, namespace)
                return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
            config_map = self.core.read_namespaced_config_map(name, namespace)
            return dict(config_map.data or {})
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def run_probes(self, container: Container) -> None:
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            state = container.probes.get(kind)
            if state is None or time.monotonic() < state.next_at:
                continue
            if kind != "startupProbe" and not container.started:
                continue
            if kind == "startupProbe" and state.passed:
                continue
            probe = container.spec[kind]
            state.next_at = time.monotonic() + float(probe.get("periodSeconds", 10))
            if self.probe_once(container, probe):
                state.successes, state.failures = state.successes + 1, 0
                if state.successes >= int(probe.get("successThreshold", 1)):
                    state.passed = True
            else:
                state.successes, state.failures = 0, state.failures + 1
                if state.failures >= int(probe.get("failureThreshold", 3)):
                    state.passed = False
                    if kind != "readinessProbe" and container.proc is not None:
                        self.kill_unhealthy(container, kind)
                        return

    def kill_unhealthy(self, container: Container, kind: str) -> None:
        log.info("pod %s: %s failed its %s; restarting it", self.key, container.name, kind)
        grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        assert container.proc is not None
        stop_processes([container.proc], float(grace))
        self.on_exit(container, container.proc.wait())

    def probe_once(self, container: Container, probe: dict[str, Any]) -> bool:
        timeout = float(probe.get("timeoutSeconds", 1))
        try:
            if "httpGet" in probe:
                get = probe["httpGet"]
                port = kubelet_env.resolve_port(container.spec, get["port"])
                url = f"http://{get.get('host') or self.ip}:{port}{get.get('path', '/')}"
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    return 200 <= int(resp.status) < 400
            if "tcpSocket" in probe:
                port = kubelet_env.resolve_port(container.spec, probe["tcpSocket"]["port"])
                with socket.create_connection((self.ip, port), timeout=timeout):
                    return True
            if "exec" in probe:
                command = list(probe["exec"]["command"])
                if container.namespaced and container.proc is not None:
                    pid = str(container.proc.pid)
                    command = [self.node.nsenter, "--target", pid, "--mount", "--", *command]
                done = subprocess.run(
                    command,
                    env=container.env,
                    timeout=timeout,
                    check=False,
                    capture_output=True,
                    cwd=container.spec.get("workingDir") or REPO_ROOT,
                )
                return done.returncode == 0
        except (
            OSError,
            urllib.error.URLError,
            subprocess.TimeoutExpired,
            kubelet_env.ContainerConfigError,
        ):
            return False
        return False

    # -- status -----------------------------------------------------------------------------
    def condition(self, kind: str, ok: bool) -> dict[str, str]:
        status = "True" if ok else "False"
        previous = self.transitions.get(kind)
        if previous is None or previous[0] != status:
            self.transitions[kind] = (status, now_iso())
        return {"type": kind, "status": status, "lastTransitionTime": self.transitions[kind][1]}

    def phase(self) -> str:
        if self.apps and all(c.completed for c in self.apps):
            failed = any(c.state.get("terminated", {}).get("exitCode", 0) != 0 for c in self.apps)
            return "Failed" if failed else "Succeeded"
        if any(
            c.init and c.completed is False and c.restart_count and self.restart_policy() == "Never"
            for c in self.inits
        ):
            return "Failed"
        started = all(c.completed for c in self.inits) and any(
            c.proc is not None or c.restart_count for c in self.apps
        )
        return "Running" if started else "Pending"

    @staticmethod
    def container_status(c: Container) -> dict[str, Any]:
        return {
            "name": c.name,
            "image": c.spec.get("image", ""),
            "imageID": "",
            "containerID": f"process://{c.proc.pid}" if c.proc else "",
            "ready": c.ready,
            "started": c.started,
            "restartCount": c.restart_count,
            "state": c.state,
            "lastState": c.last_state,
        }

    def status(self) -> dict[str, Any]:
        initialized = all(c.completed for c in self.inits)
        ready = initialized and all(c.ready for c in self.apps)
        status: dict[str, Any] = {
            "phase": self.phase(),
            "hostIP": HOST_IP,
            "hostIPs": [{"ip": HOST_IP}],
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "startTime": self.start_time,
            "conditions": [
                self.condition("PodScheduled", True),
                self.condition("Initialized", initialized),
                self.condition("ContainersReady", ready),
                self.condition("Ready", ready),
            ],
            "containerStatuses": [self.container_status(c) for c in self.apps],
        }
        if self.inits:
            status["initContainerStatuses"] = [self.container_status(c) for c in self.inits]
        return status

    def publish(self) -> None:
        status = self.status()
        if status == self.last_status:
            return
        meta = self.pod["metadata"]
        try:
            self.core.patch_namespaced_pod_status(
                meta["name"], meta["namespace"], {"status": status}
            )
            self.last_status = status
        except ApiException as error:
            if error.status == 404:
                self.deleted = True
            else:
                log.warning("pod %s: status update failed: %s", self.key, error.reason)

    def finished(self) -> bool:
        return self.phase() in ("Succeeded", "Failed")

    def terminate(self) -> None:
        meta = self.pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        running = [c for c in self.inits + self.apps if c.proc is not None]
        log.info(
            "pod %s: deleting; SIGTERM to %d container(s), grace %ss", self.key, len(running), grace
        )
        with self.lock:
            stop_processes([c.proc for c in running if c.proc], float(grace))
            for container in running:
                assert container.proc is not None
                code = container.proc.returncode
                container.proc = None
                container.state = {
                    "terminated": {
                        "exitCode": code,
                        "reason": "Completed" if code == 0 else "Error",
                        "startedAt": container.started_at,
                        "finishedAt": now_iso(),
                    }
                }
        if self.deleted:
            return
        with contextlib.suppress(ApiException):
            self.publish()
        try:
            self.core.delete_namespaced_pod(
                meta["name"],
                meta["namespace"],
                grace_period_seconds=0,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=client.V1Preconditions(uid=meta["uid"])
                ),
            )
        except ApiException as error:
            if error.status not in (404, 409):
                log.warning("pod %s: final delete failed: %s", self.key, error.reason)
