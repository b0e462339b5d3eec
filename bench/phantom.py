"""The Kubernetes side of the observing benchmark: AgentWorkers whose pods no kubelet runs.

This module owns the objects the benchmark makes on the rig's API server and their removal: the
namespace, the credentials Secret, the AgentWorkers (examples/agentworker.yaml with autoscaling
off and one replica per fake worker, their pods labelled as the benchmark's and scheduled onto
the phantom node only: a nodeSelector and a toleration of its taint) and a phantom Node (tainted,
so that no other workload is scheduled onto it, and kept Ready by `heartbeat` so that the node
lifecycle controller neither taints it nor marks its pods NotReady). The pods are real
Deployment pods: the operator makes the Deployments, the rig's controller-manager their
ReplicaSets and pods, its scheduler binds them to the phantom node, and `bench.phantom_kubelet`
writes their status as a kubelet would. `pods_report` says what became of them after the
windows; `delete` removes the namespace first (no ReplicaSet can make a pod in a namespace being
deleted), then its pods at once, since no kubelet would ever confirm their end.

The `build_*` functions and `unsettled` are pure; the rest talks to the API server through
`agentworker_operator.kube` with the rig's credentials. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import math
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from agentworker_operator import builders, kube
from bench import fake_fleet
from bench.fake_fleet import FleetShape

Manifest = dict[str, Any]

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "agentworker.yaml"
CRD = REPO / "crds" / "agentworker.dev_agentworkers.yaml"
CRD_NAME = f"{builders.PLURAL}.{builders.GROUP}"
NAMESPACE = "bench-observing"
NODE = "bench-phantom-node"
NODE_LEASE_NAMESPACE = "kube-node-lease"
SECRET = "livekit-credentials"
BENCH_LABEL = "agentworker.dev/bench"
HOSTNAME_LABEL = "kubernetes.io/hostname"
HEARTBEAT_S = 10.0
WAIT_S = 120.0
"""Bound of every wait for the API server (namespace gone, service account made, Deployments
settled)."""
SWEEP_S = 15.0
"""How often `delete` deletes the namespace's pods again while the namespace is being deleted
(one deletion of thousands of pods runs on in the API server after the request timed out)."""
NODE_PODS = 10_000
"""Pods the phantom node has room for: the most workers a run may have. Its CPU and memory fit
as many of the example's pods (requests 100m and 256Mi each), so that the scheduler's resource
fit never refuses one."""
TAINT: Manifest = {"key": BENCH_LABEL, "value": "phantom", "effect": "NoSchedule"}
"""The phantom node's taint: no pod but the benchmark's workers tolerates it."""
CONDITION_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
"""The node lifecycle controller's taints: a new node is not-ready until its first heartbeat is
seen, and a late heartbeat must not have the pods evicted."""
TOLERATIONS: tuple[Manifest, ...] = (
    {"key": TAINT["key"], "operator": "Equal", "value": TAINT["value"], "effect": TAINT["effect"]},
    *({"key": key, "operator": "Exists"} for key in CONDITION_TAINTS),  # every effect
)
"""spec.podTemplate.tolerations of the benchmark's AgentWorkers."""


class SetupError(RuntimeError):
    """The benchmark's objects could not be made; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Credentials:
    api_key: str
    api_secret: str = field(repr=False)


def timestamp(now: datetime.datetime) -> str:
    """`now` as the API writes a condition's time."""
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_namespace() -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": {BENCH_LABEL: "observing"}},
    }


def build_secret(credentials: Credentials) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": NAMESPACE},
        "stringData": {
            "LIVEKIT_API_KEY": credentials.api_key,
            "LIVEKIT_API_SECRET": credentials.api_secret,
        },
    }


def build_agentworker(
    example: Mapping[str, Any], name: str, livekit_url: str, *, replicas: int
) -> Manifest:
    """The example AgentWorker, renamed, with `replicas` workers and autoscaling off, its pods
    labelled as the benchmark's and scheduled onto the phantom node only."""
    body = copy.deepcopy(dict(example))
    body["metadata"] = {"name": name, "namespace": NAMESPACE, "labels": {BENCH_LABEL: "observing"}}
    spec = body["spec"]
    spec["agentName"] = name
    spec["livekit"]["url"] = livekit_url
    spec["livekit"]["credentialsSecret"] = {"name": SECRET}
    spec["loadThreshold"] = fake_fleet.LOAD_THRESHOLD
    spec["replicas"] = replicas
    spec["autoscaling"]["enabled"] = False
    template = spec.setdefault("podTemplate", {})
    template["labels"] = {**template.get("labels", {}), BENCH_LABEL: "observing"}
    template["nodeSelector"] = {HOSTNAME_LABEL: NODE}
    template["tolerations"] = [dict(t) for t in TOLERATIONS]
    return body


def build_node() -> Manifest:
    """A Node no kubelet runs: schedulable, but tainted, so that only the benchmark's worker
    pods (which select it by name) are scheduled onto it."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE,
            "labels": {BENCH_LABEL: "observing", HOSTNAME_LABEL: NODE},
        },
        "spec": {"taints": [dict(TAINT)]},
    }


def node_status(since: datetime.datetime, now: datetime.datetime) -> Manifest:
    """The status a kubelet posts: Ready since `since`, heard from `now`, room for NODE_PODS."""
    capacity = {
        "cpu": str(NODE_PODS // 10),
        "memory": f"{NODE_PODS // 4}Gi",
        "pods": str(NODE_PODS),
    }
    return {
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "BenchHeartbeat",
                "message": "the observing benchmark posts this status; no kubelet runs here",
                "lastHeartbeatTime": timestamp(now),
                "lastTransitionTime": timestamp(since),
            }
        ],
    }


def build_node_lease(now: datetime.datetime) -> Manifest:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": NODE, "namespace": NODE_LEASE_NAMESPACE},
        "spec": {
            "holderIdentity": NODE,
            "leaseDurationSeconds": 40,
            "renewTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        },
    }


def pod_selector() -> str:
    return f"{BENCH_LABEL}=observing"


def apply_crd() -> str:
    """kubectl apply --server-side the shipped CRD and wait until it is established.

    When the apply fails (the file being edited) but the API server has the CRD already, that
    one serves, and the apply's error comes back as a problem to report; "" when it applied.
    """
    kubectl = str(Path(sys.executable).with_name("kubectl"))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [kubectl, *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)

    applied = run("apply", "--server-side", "-f", str(CRD))
    problem = ""
    if applied.returncode != 0:
        problem = f"the CRD file did not apply, the installed CRD was used: {applied.stderr[:400]}"
    ready = run("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD_NAME}")
    if ready.returncode != 0:
        raise SetupError(f"no established CRD {CRD_NAME}: {problem or ready.stderr.strip()}")
    return problem


async def wait_until(
    what: str, wrong: Callable[[], Awaitable[Sequence[str]]], *, timeout_s: float = WAIT_S
) -> None:
    """Poll `wrong` once a second until it says nothing is wrong; SetupError with what it said
    last when `timeout_s` runs out."""
    deadline = time.monotonic() + timeout_s
    while found := await wrong():
        if time.monotonic() > deadline:
            raise SetupError(f"{what}: not within {timeout_s:.0f}s: " + "; ".join(found[:5]))
        await asyncio.sleep(1.0)


async def create(
    client: kube.Kube,
    shape: FleetShape,
    livekit_url: str,
    credentials: Credentials,
    *,
    timeout_s: float = WAIT_S,
) -> None:
    """Every object, in order; leftovers of an earlier run are removed first (`delete`, bounded
    by `timeout_s`). The operator will make the Deployments, and they the pods."""
    await delete(client, timeout_s=timeout_s)
    now = datetime.datetime.now(datetime.UTC)
    await client.request("POST", "/api/v1/nodes", body=build_node())
    await client.create(build_node_lease(now))
    await beat(client, since=now)
    await client.request("POST", "/api/v1/namespaces", body=build_namespace())
    await client.create(build_secret(credentials))
    example = yaml.safe_load(EXAMPLE.read_text())
    for aw in range(shape.agentworkers):
        name = fake_fleet.agentworker_name(aw)
        replicas = shape.workers_per_agentworker
        await client.create(build_agentworker(example, name, livekit_url, replicas=replicas))
    account = f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default"

    async def no_account() -> list[str]:
        return [] if await client.get(account) is not None else ["not made yet"]

    await wait_until("the namespace's default ServiceAccount", no_account)


async def beat(client: kube.Kube, *, since: datetime.datetime) -> None:
    """One heartbeat of the phantom node: its Ready status and its Lease."""
    now = datetime.datetime.now(datetime.UTC)
    await client.request(
        "PATCH",
        f"/api/v1/nodes/{NODE}/status",
        body={"status": node_status(since, now)},
        content_type="application/merge-patch+json",
    )
    await client.request(
        "PATCH",
        kube.path_of("coordination.k8s.io/v1", "Lease", NODE_LEASE_NAMESPACE, NODE),
        body={"spec": build_node_lease(now)["spec"]},
        content_type="application/merge-patch+json",
    )


async def heartbeat(client: kube.Kube, *, since: datetime.datetime) -> None:
    """Beat every HEARTBEAT_S seconds until cancelled; a failed beat is retried next time."""
    while True:
        await asyncio.sleep(HEARTBEAT_S)
        with contextlib.suppress(kube.KubeError, TimeoutError, OSError):
            await beat(client, since=since)


def unsettled(shape: FleetShape, deployments: Sequence[Mapping[str, Any]]) -> list[str]:
    """What keeps the Deployments from being settled, one line each; [] once every
    AgentWorker's Deployment has seen its latest spec and has its workers_per_agentworker pods,
    all of them of the latest template and ready."""
    per = shape.workers_per_agentworker
    by_name = {str((d.get("metadata") or {}).get("name")): d for d in deployments}
    wrong = []
    for aw in range(shape.agentworkers):
        name = fake_fleet.agentworker_name(aw)
        deployment = by_name.get(name)
        if deployment is None:
            wrong.append(f"Deployment {name} not made")
            continue
        meta, status = deployment.get("metadata") or {}, deployment.get("status") or {}
        counts = {
            key: status.get(key) or 0
            for key in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")
        }
        asked = (deployment.get("spec") or {}).get("replicas")
        if status.get("observedGeneration") != meta.get("generation"):
            wrong.append(f"Deployment {name}: its controller has not seen its latest spec")
        elif asked != per or any(n != per for n in counts.values()):
            wrong.append(f"Deployment {name}: replicas {asked}, status {counts}, not {per}")
    return wrong


async def wait_settled(client: kube.Kube, shape: FleetShape, *, timeout_s: float = WAIT_S) -> None:
    """Wait (bounded) until `unsettled` finds nothing: the ReplicaSets count the pods."""
    path = kube.path_of("apps/v1", "Deployment", NAMESPACE)
    selector = f"{builders.LABEL_MANAGED_BY}={builders.FIELD_MANAGER}"

    async def wrong() -> list[str]:
        return unsettled(shape, await client.list_items(path, selector))

    await wait_until("the Deployments settled", wrong, timeout_s=timeout_s)


async def pods_report(client: kube.Kube, uids: Mapping[str, str]) -> list[str]:
    """What happened to the worker pods since they were started (`uids`: name -> uid): [] when
    every one is as it was, and there is no other."""
    listed = await client.list_items(kube.path_of("v1", "Pod", NAMESPACE), pod_selector())
    seen = {p["metadata"]["name"]: p for p in listed}
    problems = [f"pod {n} is gone" for n in sorted(set(uids) - set(seen))]
    for name, pod in sorted(seen.items()):
        meta, status = pod["metadata"], pod.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        if name not in uids:
            problems.append(f"pod {name} was made after the pods were started")
        elif uids[name] != meta.get("uid"):
            problems.append(f"pod {name} was replaced")
        elif meta.get("deletionTimestamp"):
            problems.append(f"pod {name} is being deleted")
        elif status.get("phase") != "Running" or not ready:
            problems.append(f"pod {name} is {status.get('phase')}, ready={ready}")
    return problems


async def delete(client: kube.Kube, *, timeout_s: float = WAIT_S) -> None:
    """Remove every object `create` makes and the pods the Deployments made. The namespace goes
    first (the API server then refuses new pods in it), then its pods at once, grace period 0,
    again every SWEEP_S until the namespace is gone (bounded by `timeout_s`): no kubelet would
    confirm their end."""
    for path in (
        f"/api/v1/namespaces/{NAMESPACE}",
        f"/api/v1/nodes/{NODE}",
        kube.path_of("coordination.k8s.io/v1", "Lease", NODE_LEASE_NAMESPACE, NODE),
    ):
        with contextlib.suppress(kube.KubeError):
            await client.request("DELETE", path)
    pods = kube.path_of("v1", "Pod", NAMESPACE)
    at_once = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0}
    swept = -math.inf

    async def still_there() -> list[str]:
        nonlocal swept
        if time.monotonic() - swept >= SWEEP_S:
            swept = time.monotonic()
            # thousands of pods outlast a request's read timeout: the API server goes on
            # deleting them, and the next sweep finds what is left
            with contextlib.suppress(kube.KubeError, TimeoutError, aiohttp.ClientError):
                params = {"gracePeriodSeconds": "0"}
                await client.request("DELETE", pods, body=at_once, params=params)
        there = {
            f"namespace {NAMESPACE}": await client.get(f"/api/v1/namespaces/{NAMESPACE}"),
            f"node {NODE}": await client.get(f"/api/v1/nodes/{NODE}"),
        }
        return [what for what, found in there.items() if found is not None]

    await wait_until(
        f"namespace {NAMESPACE} and node {NODE} deleted", still_there, timeout_s=timeout_s
    )
