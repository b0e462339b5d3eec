"""What the scaling benchmarks ask the rig's cluster for: pure `build_*` functions.

Owns the objects each side of `bench.scaling` runs: the credentials Secret, the plain Deployment
a user would write by hand for the call agent, and the AgentWorkers of the reaction and the
scale-down measurements; and the official worker's AgentWorker of `bench.companion`. Every
function returns a plain dict ready for `kubectl apply`; nothing here does I/O, reads a clock
or the environment.
"""

from __future__ import annotations

from typing import Any, TypeAlias

Manifest: TypeAlias = dict[str, Any]
"""A Kubernetes object as sent to the API server."""

ENTRYPOINT = "tests.e2e.operator.call_agent:opts"
"""The agent of the operator's scaling tests: it holds each call as long as its dispatch says."""
IMAGE = "ghcr.io/agentworker/agent-worker:0.3.0"
"""Never pulled: the rig's process runner runs the container's command as a local process."""
CREDENTIALS_SECRET = "livekit-credentials"
AGENT_PORT = 8081
PLAIN_CONTAINER = "agent-worker"
LOAD_THRESHOLD = 0.7
"""The runtime's default; the call agent reports 3 of its 4 calls as 0.75, so 3 calls are full."""


def build_credentials_secret(namespace: str, *, api_key: str, api_secret: str) -> Manifest:
    """The LiveKit credentials both sides read by secretKeyRef (sent on stdin, never argv)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": CREDENTIALS_SECRET, "namespace": namespace},
        "type": "Opaque",
        "stringData": {"LIVEKIT_API_KEY": api_key, "LIVEKIT_API_SECRET": api_secret},
    }


def _secret_env(key: str) -> Manifest:
    return {"name": key, "valueFrom": {"secretKeyRef": {"name": CREDENTIALS_SECRET, "key": key}}}


def build_plain_deployment(
    *, name: str, namespace: str, agent_name: str, livekit_url: str, replicas: int
) -> Manifest:
    """The call agent as a user writes it by hand: env, a readiness probe, the default grace."""
    container: Manifest = {
        "name": PLAIN_CONTAINER,
        "image": IMAGE,
        "command": ["agent-worker"],
        "args": ["start", ENTRYPOINT],
        "ports": [{"containerPort": AGENT_PORT}],
        "env": [
            {"name": "LIVEKIT_URL", "value": livekit_url},
            _secret_env("LIVEKIT_API_KEY"),
            _secret_env("LIVEKIT_API_SECRET"),
            {"name": "AGENT_NAME", "value": agent_name},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "AGENT_PORT", "value": str(AGENT_PORT)},
        ],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": AGENT_PORT}},
    }
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [container],
                    "terminationGracePeriodSeconds": 30,  # the default, written out
                },
            },
        },
    }


def build_agentworker(
    *,
    name: str,
    namespace: str,
    agent_name: str,
    livekit_url: str,
    autoscaling: Manifest,
    drain_timeout: str = "5m",
) -> Manifest:
    """An AgentWorker of the call agent; every field not named here keeps its default."""
    return {
        "apiVersion": "agentworker.dev/v1alpha1",
        "kind": "AgentWorker",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "agentName": agent_name,
            "image": IMAGE,
            "entrypoint": ENTRYPOINT,
            "livekit": {"url": livekit_url, "credentialsSecret": {"name": CREDENTIALS_SECRET}},
            "loadThreshold": LOAD_THRESHOLD,
            "drainTimeout": drain_timeout,
            "autoscaling": autoscaling,
        },
    }


def build_official_agentworker(
    *,
    name: str,
    namespace: str,
    agent_name: str,
    livekit_url: str,
    autoscaling: Manifest,
    command: list[str],
    working_dir: str,
    companion_mode: str,
) -> Manifest:
    """An AgentWorker of an unmodified livekit-agents worker (spec.command, no entrypoint), one
    idle process, the companion in `companion_mode` (Inject or Disabled)."""
    manifest = build_agentworker(
        name=name,
        namespace=namespace,
        agent_name=agent_name,
        livekit_url=livekit_url,
        autoscaling=autoscaling,
    )
    spec = manifest["spec"]
    del spec["entrypoint"]
    spec |= {
        "command": command,
        "workingDir": working_dir,
        "numIdleProcesses": 1,
        "companion": {"mode": companion_mode},
    }
    return manifest


def build_reaction_autoscaling() -> Manifest:
    """Measurement (a): 1 to 3 workers, target load 0.5, up to 4 pods added per 15 s."""
    return {
        "enabled": True,
        "minReplicas": 1,
        "maxReplicas": 3,
        "targetLoad": 0.5,
        "scaleUp": {"stepPods": 4, "period": "15s"},
    }


def build_fixed_autoscaling(replicas: int, *, busy_workers: str | None) -> Manifest:
    """Measurement (c): autoscaling held at `replicas`; busy_workers None keeps the default."""
    autoscaling: Manifest = {"enabled": True, "minReplicas": replicas, "maxReplicas": replicas}
    if busy_workers is not None:
        autoscaling["scaleDown"] = {"busyWorkers": busy_workers}
    return autoscaling
