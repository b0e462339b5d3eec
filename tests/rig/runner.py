"""The process runner: plays the kubelet and the container runtime for one Node of the rig.

Test infrastructure, never product code. It registers one Ready Node, and for every pod bound to
it runs each container's command and args as a local process (the image is ignored) with the env
a kubelet would give it, on the pod's own loopback address (127.0.x.y, exported as POD_IP through
the downward API). It runs httpGet/tcpSocket/exec probes, restarts exited containers per
restartPolicy with backoff, and on deletion sends SIGTERM, waits up to the grace period, SIGKILLs,
then removes the pod, as a kubelet does.

Service accounts as a kubelet gives them: every container gets KUBERNETES_SERVICE_HOST/PORT (the
API server's real address: the rig has no kube-proxy for the Service's cluster IP), and the
projected volumes the ServiceAccount admission plugin put in the pod spec (token from the
TokenRequest API bound to the pod, ca.crt, namespace) are written under
`<root-dir>/pods/<uid>/` and bind-mounted at their mountPath under /var/run/secrets in the
container's own mount namespace (`unshare --mount`; needs root); tokens are renewed at 80 % of
their lifetime. emptyDir volumes mounted under /agentworker-companion (the operator's companion
package, copied there by an init container) are per-pod directories there, bind-mounted the same
way and shared by the pod's containers; an emptyDir elsewhere (the operator's /tmp) is not
emulated, so the container sees the host's directory (`projected.EMPTY_DIR_PREFIXES` says why).
Other volumes, images and resource limits are not emulated.

SIGTERM or SIGINT (`make rig-down`) ends every pod's processes (SIGTERM, 5 s) and the runner.
SIGUSR1 ends the runner alone and leaves the processes running: the next runner adopts them
(`adoption.py`), as a restarted kubelet keeps its containers; `python -m tests.rig
restart-runner` does that.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import shutil
import signal
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from tests.rig import kubelet_env, pod_process
from tests.rig.env import REPO_ROOT, RIG_DIR

log = logging.getLogger("rig.runner")
HOST_IP = "127.0.0.1"
HEARTBEAT_S = 10.0


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class AddressPool:
    """Loopback pod IPs <prefix>.x.y (x >= 1; prefix 127.0), each held by one pod at a time."""

    def __init__(self, prefix: str = "127.0") -> None:
        self._lock = threading.Lock()
        self._used: set[str] = set()
        self._next = 1
        self._prefix = prefix

    def take(self, wanted: str | None) -> str:
        with self._lock:
            if wanted and wanted.startswith("127.") and wanted not in self._used:
                self._used.add(wanted)
                return wanted
            while True:
                n = self._next
                self._next = self._next % (254 * 254) + 1
                ip = f"{self._prefix}.{n // 254 + 1}.{n % 254 + 1}"
                if ip not in self._used:
                    self._used.add(ip)
                    return ip

    def give_back(self, ip: str) -> None:
        with self._lock:
            self._used.discard(ip)


class Node:
    """The Node object and its heartbeat (Lease and Ready condition)."""

    def __init__(
        self, api: client.ApiClient, name: str, taints: list[dict[str, str]] | None = None
    ) -> None:
        self.name = name
        self.taints = taints or []
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)

    def register(self) -> None:
        body: Any = {  # plain dicts are accepted where the stubs name models
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": {
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "agentworker.dev/rig": "process-runner",
                },
            },
            "spec": {"taints": self.taints},
        }
        try:
            self.core.create_node(body)
        except ApiException as error:
            if error.status != 409:
                raise
        self.heartbeat()

    def heartbeat(self) -> None:
        stamp = now_iso()
        capacity = {"cpu": "32", "memory": "64Gi", "pods": "250", "ephemeral-storage": "100Gi"}
        status = {
            "status": {
                "capacity": capacity,
                "allocatable": capacity,
                "addresses": [
                    {"type": "InternalIP", "address": HOST_IP},
                    {"type": "Hostname", "address": self.name},
                ],
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "process runner is posting ready status",
                        "lastHeartbeatTime": stamp,
                        "lastTransitionTime": stamp,
                    }
                ],
                "nodeInfo": {
                    "kubeletVersion": "v1.37.2",
                    "kubeProxyVersion": "",
                    "osImage": "rig",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                    "containerRuntimeVersion": "process://rig",
                    "kernelVersion": "",
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                },
            }
        }
        self.core.patch_node_status(self.name, status)
        self._renew_lease()

    def _renew_lease(self) -> None:
        micro = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lease: Any = {
            "metadata": {"name": self.name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40, "renewTime": micro},
        }
        try:
            self.coordination.patch_namespaced_lease(self.name, "kube-node-lease", lease)
        except ApiException as error:
            if error.status != 404:
                raise
            self.coordination.create_namespaced_lease("kube-node-lease", lease)

    def keep_alive(self, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                self.heartbeat()
            except Exception:  # a missed beat is retried on the next tick
                log.exception("node heartbeat failed")


class Runner:
    """Watches the pods bound to the node and keeps one PodProcess per pod uid."""

    def __init__(
        self,
        api: client.ApiClient,
        node: str,
        logs: Path,
        context: pod_process.NodeContext,
        ip_prefix: str = "127.0",
    ) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.node = node
        self.logs = logs
        self.context = context
        self.addresses = AddressPool(ip_prefix)
        self.pods: dict[str, pod_process.PodProcess] = {}
        self.stopping = threading.Event()

    def handle(self, pod: dict[str, Any], deleted: bool) -> None:
        uid = pod["metadata"]["uid"]
        current = self.pods.get(uid)
        if current is None:
            if deleted or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                return
            current = pod_process.PodProcess(
                self.api,
                pod,
                self.addresses,
                self.logs,
                on_gone=lambda: self.pods.pop(uid, None),
                node=self.context,
            )
            self.pods[uid] = current
            current.start()
            return
        current.update(pod, deleted)

    def sweep_volumes(self, uids: set[str]) -> None:
        """Remove the volume directories of pods that are gone (kept for adopted ones)."""
        pods_dir = self.context.root / "pods"
        for path in pods_dir.iterdir() if pods_dir.is_dir() else []:
            if path.name not in uids:
                shutil.rmtree(path, ignore_errors=True)

    def watch_pods(self) -> None:
        selector = f"spec.nodeName={self.node}"
        sanitize = self.api.sanitize_for_serialization  # untyped in the client
        while not self.stopping.is_set():
            try:
                listing = self.core.list_pod_for_all_namespaces(field_selector=selector)
                for item in listing.items:
                    self.handle(sanitize(item), deleted=False)  # type: ignore[no-untyped-call]
                self.sweep_volumes({str(item.metadata.uid) for item in listing.items})
                stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                    self.core.list_pod_for_all_namespaces,
                    field_selector=selector,
                    resource_version=listing.metadata.resource_version
                    if listing.metadata
                    else None,
                    timeout_seconds=300,
                )
                for event in stream:
                    if self.stopping.is_set():
                        return
                    obj = sanitize(event["object"])  # type: ignore[no-untyped-call]
                    self.handle(obj, deleted=event["type"] == "DELETED")
            except ApiException as error:
                if error.status != 410:  # 410 Gone: the resource version expired, list again
                    log.warning("pod watch failed: %s", error.reason)
                    time.sleep(1)
            except Exception:
                log.exception("pod watch broke; listing again")
                time.sleep(1)

    def shutdown(self) -> None:
        """The rig is going down: end every container, leave the pod objects alone."""
        self.stopping.set()
        for pod in list(self.pods.values()):
            pod.kill_all(grace_s=5.0)


def parse_taint(text: str) -> dict[str, str]:
    """`key=value:Effect` (or `key:Effect`) as a Node taint."""
    rest, _, effect = text.rpartition(":")
    key, _, value = rest.partition("=")
    if not key or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a taint like key=value:NoSchedule")
    taint = {"key": key, "effect": effect}
    return {**taint, "value": value} if value else taint


def node_context(api: client.ApiClient, root: Path) -> pod_process.NodeContext:
    """The API server's address as the pods see it, the volume root, and the namespace tools."""
    server = urllib.parse.urlsplit(api.configuration.host)
    unshare, nsenter = shutil.which("unshare"), shutil.which("nsenter")
    if unshare is None or nsenter is None:
        raise SystemExit("the runner needs util-linux unshare and nsenter on PATH")
    return pod_process.NodeContext(
        services=kubelet_env.service_env(server.hostname or HOST_IP, server.port or 443),
        root=root,
        unshare=unshare,
        nsenter=nsenter,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node", default="rig-node")
    parser.add_argument("--logs", default=str(REPO_ROOT / ".rig/logs/pods"))
    parser.add_argument(
        "--root-dir",
        default=str(RIG_DIR / "kubelet"),
        help="per-pod volume directories go under <root-dir>/pods/<uid>/ (those of pods no longer"
        " on the node are removed at start)",
    )
    parser.add_argument(
        "--taint",
        action="append",
        type=parse_taint,
        default=[],
        help="key=value:Effect on the Node (repeatable), e.g. for a second runner of one's own",
    )
    parser.add_argument(
        "--pod-ip-prefix",
        default="127.0",
        help="pod IPs are <prefix>.x.y; a second runner needs a prefix of its own (e.g. 127.61)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    api = config.new_client_from_config(args.kubeconfig)  # type: ignore[no-untyped-call]
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    root = Path(args.root_dir)
    node = Node(api, args.node, args.taint)
    node.register()
    runner = Runner(api, args.node, logs, node_context(api, root), args.pod_ip_prefix)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping every pod process", signum)
        stop.set()
        runner.shutdown()
        os._exit(0)

    def on_restart(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping the runner only; the pods' processes keep running", signum)
        os._exit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGUSR1, on_restart)
    threading.Thread(target=node.keep_alive, args=(stop,), daemon=True, name="heartbeat").start()
    log.info("node %s registered; watching its pods", args.node)
    runner.watch_pods()
    return 0


if __name__ == "__main__":
    sys.exit(main())
