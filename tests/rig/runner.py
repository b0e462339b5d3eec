"""The process runner: plays the kubelet and the container runtime for one Node of the rig.

Test infrastructure, never product code. It registers one Ready Node, and for every pod bound to
it runs each container's command and args as a local process (the image is ignored) with the env
a kubelet would give it, on the pod's own loopback address (127.0.x.y, exported as POD_IP through
the downward API). It runs httpGet/tcpSocket/exec probes, restarts exited containers per
restartPolicy with backoff, and on deletion sends SIGTERM, waits up to the grace period, SIGKILLs,
then removes the pod, as a kubelet does. Volumes, images and resource limits are not emulated.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from tests.rig import pod_process
from tests.rig.env import REPO_ROOT

log = logging.getLogger("rig.runner")
HOST_IP = "127.0.0.1"
HEARTBEAT_S = 10.0


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class AddressPool:
    """Loopback pod IPs 127.0.x.y (x >= 1), each held by one pod at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._used: set[str] = set()
        self._next = 1

    def take(self, wanted: str | None) -> str:
        with self._lock:
            if wanted and wanted.startswith("127.") and wanted not in self._used:
                self._used.add(wanted)
                return wanted
            while True:
                n = self._next
                self._next = self._next % (254 * 254) + 1
                ip = f"127.0.{n // 254 + 1}.{n % 254 + 1}"
                if ip not in self._used:
                    self._used.add(ip)
                    return ip

    def give_back(self, ip: str) -> None:
        with self._lock:
            self._used.discard(ip)


class Node:
    """The Node object and its heartbeat (Lease and Ready condition)."""

    def __init__(self, api: client.ApiClient, name: str) -> None:
        self.name = name
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

    def __init__(self, api: client.ApiClient, node: str, logs: Path) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.node = node
        self.logs = logs
        self.addresses = AddressPool()
        self.pods: dict[str, pod_process.PodProcess] = {}
        self.stopping = threading.Event()

    def handle(self, pod: dict[str, Any], deleted: bool) -> None:
        uid = pod["metadata"]["uid"]
        current = self.pods.get(uid)
        if current is None:
            if deleted or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                return
            current = pod_process.PodProcess(
                self.api, pod, self.addresses, self.logs, on_gone=lambda: self.pods.pop(uid, None)
            )
            self.pods[uid] = current
            current.start()
            return
        current.update(pod, deleted)

    def watch_pods(self) -> None:
        selector = f"spec.nodeName={self.node}"
        sanitize = self.api.sanitize_for_serialization  # untyped in the client
        while not self.stopping.is_set():
            try:
                listing = self.core.list_pod_for_all_namespaces(field_selector=selector)
                for item in listing.items:
                    self.handle(sanitize(item), deleted=False)  # type: ignore[no-untyped-call]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node", default="rig-node")
    parser.add_argument("--logs", default=str(REPO_ROOT / ".rig/logs/pods"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    api = config.new_client_from_config(args.kubeconfig)  # type: ignore[no-untyped-call]
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    node = Node(api, args.node)
    node.register()
    runner = Runner(api, args.node, logs)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping every pod process", signum)
        stop.set()
        runner.shutdown()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=node.keep_alive, args=(stop,), daemon=True, name="heartbeat").start()
    log.info("node %s registered; watching its pods", args.node)
    runner.watch_pods()
    return 0


if __name__ == "__main__":
    sys.exit(main())
