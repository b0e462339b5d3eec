"""The demo's cluster I/O: kubectl and helm on the rig, and readings of the fleet.

Owns every call the demo makes to the API server: the shipped CRD, the namespace and its
credentials Secret (sent on stdin, never written down), `helm upgrade --install` of the chart,
the AgentWorker (a previous run's deleted first and its workers waited out), and the readings of
the AgentWorker, its Deployment and its Events through the kubernetes client: one request each,
no process per reading, as the rig has two cores. It decides nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from kubernetes import client, config

from bench import cluster
from bench import manifests as bench_manifests
from bench.cluster import ClusterError, Kubectl
from hack.demo.manifests import Manifest
from tests.rig import env as rig_env

CHART = rig_env.REPO_ROOT / "charts" / "agentworker-operator"
GROUP, VERSION, PLURAL = "agentworker.dev", "v1alpha1", "agentworkers"
HELM_TIMEOUT_S = 240.0
GONE_TIMEOUT_S = 120.0
READ_TIMEOUT_S = 5.0


def helm(rig: rig_env.RigEnv, *args: str) -> str:
    """The rig's helm against the rig; ClusterError with its output when it fails."""
    path = f"{rig.bin_path}:{os.environ.get('PATH', '')}"
    binary = shutil.which("helm", path=path)
    if binary is None:
        raise ClusterError("no helm on the rig's PATH: run `make rig`")
    done = subprocess.run(
        [binary, *args],
        env=dict(os.environ, KUBECONFIG=str(rig.kubeconfig), PATH=path),
        capture_output=True,
        text=True,
        check=False,
        timeout=HELM_TIMEOUT_S,
        cwd=rig_env.REPO_ROOT,
    )
    if done.returncode != 0:
        output = f"{done.stdout.strip()}\n{done.stderr.strip()}".strip()
        raise ClusterError(f"helm {' '.join(args[:2])} failed ({done.returncode}): {output}")
    return done.stdout


def prepare_namespace(kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str) -> None:
    """The namespace (kept across runs) with the LiveKit credentials Secret of the rig."""
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    cluster.wait_until(
        f"serviceaccount default in {namespace}",
        lambda: kubectl("get", "serviceaccount", "default", "-n", namespace, check=False),
        lambda done: done.returncode == 0,
        timeout_s=60,
        interval_s=0.5,
    )
    kubectl.apply(
        bench_manifests.build_credentials_secret(
            namespace, api_key=rig.livekit_api_key, api_secret=rig.livekit_api_secret
        )
    )


def install_operator(rig: rig_env.RigEnv, namespace: str, release: str, values: Path) -> str:
    """`helm upgrade --install` of the chart, until its operator pod is Ready; helm's notes."""
    return helm(
        rig, "upgrade", "--install", release, str(CHART), "-n", namespace, "-f", str(values),
        "--wait", "--timeout", f"{HELM_TIMEOUT_S - 30:.0f}s",
    )  # fmt: skip


def replace_agentworker(kubectl: Kubectl, manifest: Manifest) -> None:
    """Delete a previous run's AgentWorker and wait for its workers to go, then apply this one:
    every run starts from a fresh fleet (a left-over worker would take the new run's calls)."""
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    kubectl(
        "delete", "agentworker", name, "-n", namespace, "--ignore-not-found",
        "--wait=true", f"--timeout={GONE_TIMEOUT_S:.0f}s", timeout_s=GONE_TIMEOUT_S + 10,
    )  # fmt: skip
    cluster.wait_until(
        f"the workers of the previous {name} to go",
        lambda: kubectl.get_json("pods", "-n", namespace, "-l", cluster.agentworker_pods(name)),
        lambda found: not found["items"],
        timeout_s=GONE_TIMEOUT_S,
        interval_s=1.0,
    )
    kubectl.apply(manifest)


class FleetReader:
    """Reads one AgentWorker, its Deployment (same name) and its Events, each in one request."""

    def __init__(self, rig: rig_env.RigEnv, namespace: str, name: str) -> None:
        self.namespace, self.name = namespace, name
        self._api = config.new_client_from_config(str(rig.kubeconfig))  # type: ignore[no-untyped-call]
        self._custom = client.CustomObjectsApi(self._api)
        self._apps = client.AppsV1Api(self._api)
        self._core = client.CoreV1Api(self._api)

    def agentworker(self) -> dict[str, Any]:
        """The AgentWorker as stored."""
        found = self._custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, self.name, _request_timeout=READ_TIMEOUT_S
        )
        if not isinstance(found, dict):
            raise ClusterError(f"AgentWorker {self.name}: not an object: {found!r:.200}")
        return found

    def deployment(self) -> dict[str, Any] | None:
        """Its Deployment, or None before the operator made it (the raw JSON: the client's
        models would need converting back)."""
        try:
            answer: Any = self._apps.read_namespaced_deployment(
                self.name, self.namespace, _preload_content=False, _request_timeout=READ_TIMEOUT_S
            )
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        found: dict[str, Any] = json.loads(answer.data)
        return found

    def events(self, uid: str) -> list[dict[str, Any]]:
        """The Events about this AgentWorker object (by uid: not a previous run's)."""
        answer: Any = self._core.list_namespaced_event(
            self.namespace,
            field_selector=f"involvedObject.uid={uid}",
            _preload_content=False,
            _request_timeout=READ_TIMEOUT_S,
        )
        items: list[dict[str, Any]] = json.loads(answer.data)["items"]
        return items

    def close(self) -> None:
        self._api.close()
