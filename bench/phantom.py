"""The Kubernetes side of the observing benchmark: AgentWorkers whose pods no kubelet runs.

This module owns the objects the benchmark makes on the rig's API server and their removal: the
namespace, the credentials Secret, the AgentWorkers (examples/agentworker.yaml with replicas 0
and autoscaling off, so their Deployments make no pod), a phantom Node (cordoned and tainted,
so nothing else is ever scheduled onto it, and kept Ready by `heartbeat` so the node lifecycle
controller neither taints nor marks its pods NotReady), and the worker pods bound to it: labelled
for the operator's watch and grouped by `app.kubernetes.io/instance`, but without
`app.kubernetes.io/name`, so no ReplicaSet adopts or deletes them. Their status (Running, Ready,
podIP = a fake worker's address) is written through the status subresource, as a kubelet would.

The `build_*` functions are pure; the rest talks to the API server through
`agentworker_operator.kube` with the rig's credentials. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import functools
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agentworker_operator import builders, kube
from agentworker_operator import spec as specs
from bench import fake_fleet
from bench.fake_fleet import FleetShape

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "agentworker.yaml"
CRD = REPO / "crds" / "agentworker.dev_agentworkers.yaml"
CRD_NAME = f"{builders.PLURAL}.{builders.GROUP}"
NAMESPACE = "bench-observing"
NODE = "bench-phantom-node"
NODE_LEASE_NAMESPACE = "kube-node-lease"
SECRET = "livekit-credentials"
BENCH_LABEL = "agentworker.dev/bench"
HEARTBEAT_S = 10.0
CONCURRENCY = 24
"""API requests in flight at once while making the pods."""
WAIT_S = 120.0
"""Bound of every wait for the API server (namespace gone, service account made)."""

Manifest = dict[str, Any]


class SetupError(RuntimeError):
    """The benchmark's objects could not be made; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Credentials:
    api_key: str
    api_secret: str = field(repr=False)


def _stamp(now: datetime.datetime) -> str:
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


def build_agentworker(example: Mapping[str, Any], name: str, livekit_url: str) -> Manifest:
    """The example AgentWorker, renamed, with 0 replicas and autoscaling off."""
    body = copy.deepcopy(dict(example))
    body["metadata"] = {"name": name, "namespace": NAMESPACE, "labels": {BENCH_LABEL: "observing"}}
    spec = body["spec"]
    spec["agentName"] = name
    spec["livekit"]["url"] = livekit_url
    spec["livekit"]["credentialsSecret"] = {"name": SECRET}
    spec["loadThreshold"] = fake_fleet.LOAD_THRESHOLD
    spec["replicas"] = 0
    spec["autoscaling"]["enabled"] = False
    return body


def build_node() -> Manifest:
    """A Node no kubelet runs: cordoned and tainted, so the scheduler places nothing on it."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE,
            "labels": {BENCH_LABEL: "observing", "kubernetes.io/hostname": NODE},
        },
        "spec": {
            "unschedulable": True,
            "taints": [{"key": BENCH_LABEL, "value": "phantom", "effect": "NoSchedule"}],
        },
    }


def node_status(since: datetime.datetime, now: datetime.datetime) -> Manifest:
    """The status a kubelet posts: Ready since `since`, heard from `now`."""
    capacity = {"cpu": "2", "memory": "8Gi", "pods": "2000"}
    return {
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "BenchHeartbeat",
                "message": "the observing benchmark posts this status; no kubelet runs here",
                "lastHeartbeatTime": _stamp(now),
                "lastTransitionTime": _stamp(since),
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


def build_pod(shape: FleetShape, index: int, template_hash: str) -> Manifest:
    """Worker `index`'s pod, bound to the phantom node; not selected by its Deployment."""
    owner = fake_fleet.agentworker_name(index // shape.workers_per_agentworker)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": fake_fleet.pod_name(shape, index),
            "namespace": NAMESPACE,
            "labels": {
                builders.LABEL_MANAGED_BY: builders.FIELD_MANAGER,
                builders.LABEL_INSTANCE: owner,
                BENCH_LABEL: "observing",
            },
            "annotations": {builders.TEMPLATE_HASH_ANNOTATION: template_hash},
        },
        "spec": {
            "nodeName": NODE,
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "worker",
                    "image": "bench.invalid/fake-worker:0",
                    "ports": [{"name": "http", "containerPort": fake_fleet.PORT}],
                }
            ],
            "tolerations": [
                {"key": key, "operator": "Exists", "effect": "NoExecute"}
                for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
            ],
        },
    }


def pod_status(ip: str, now: datetime.datetime) -> Manifest:
    """Running and Ready on `ip`, as a kubelet reports it."""
    t = _stamp(now)
    return {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "startTime": t,
        "conditions": [
            {"type": kind, "status": "True", "lastTransitionTime": t}
            for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ],
        "containerStatuses": [
            {
                "name": "worker",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "image": "bench.invalid/fake-worker:0",
                "imageID": "",
                "state": {"running": {"startedAt": t}},
            }
        ],
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


async def _gather_bounded(calls: list[Callable[[], Awaitable[object]]]) -> None:
    """Run every call, CONCURRENCY at a time; the first failure cancels the rest."""
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(call: Callable[[], Awaitable[object]]) -> None:
        async with limit:
            await call()

    async with asyncio.TaskGroup() as group:
        for call in calls:
            group.create_task(one(call))


async def _wait_for(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not await check():
        if time.monotonic() > deadline:
            raise SetupError(f"{what}: not within {WAIT_S:.0f}s")
        await asyncio.sleep(1.0)


async def create(
    client: kube.Kube, shape: FleetShape, livekit_url: str, credentials: Credentials
) -> dict[str, str]:
    """Every object, in order; pod name -> uid. Leftovers of an earlier run are removed first."""
    await delete(client)
    now = datetime.datetime.now(datetime.UTC)
    await client.request("POST", "/api/v1/nodes", body=build_node())
    await client.create(build_node_lease(now))
    await beat(client, since=now)
    await client.request("POST", "/api/v1/namespaces", body=build_namespace())
    await client.create(build_secret(credentials))
    example = yaml.safe_load(EXAMPLE.read_text())
    hashes: list[str] = []
    for aw in range(shape.agentworkers):
        name = fake_fleet.agentworker_name(aw)
        made = await client.create(build_agentworker(example, name, livekit_url))
        owner = builders.Owner(name=name, namespace=NAMESPACE, uid=made["metadata"]["uid"])
        hashes.append(builders.template_hash(owner, specs.parse_spec(made["spec"])))
    account = f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default"

    async def has_account() -> bool:
        return await client.get(account) is not None

    await _wait_for("the namespace's default ServiceAccount", has_account)
    uids: dict[str, str] = {}

    async def make_pod(index: int) -> None:
        pod = build_pod(shape, index, hashes[index // shape.workers_per_agentworker])
        made = await client.create(pod)
        uids[made["metadata"]["name"]] = made["metadata"]["uid"]
        path = kube.path_of("v1", "Pod", NAMESPACE, made["metadata"]["name"])
        status = pod_status(fake_fleet.address(index), datetime.datetime.now(datetime.UTC))
        await client.patch_status(path, status)

    await _gather_bounded([functools.partial(make_pod, i) for i in range(shape.workers)])
    return uids


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


async def pods_report(client: kube.Kube, uids: Mapping[str, str]) -> list[str]:
    """What happened to the pods since they were made: [] when every one is as it was."""
    listed = await client.list_items(kube.path_of("v1", "Pod", NAMESPACE), pod_selector())
    seen = {p["metadata"]["name"]: p for p in listed}
    problems = [f"pod {n} is gone" for n in sorted(set(uids) - set(seen))]
    for name, pod in sorted(seen.items()):
        meta, status = pod["metadata"], pod.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        if uids.get(name) != meta.get("uid"):
            problems.append(f"pod {name} was replaced")
        elif meta.get("deletionTimestamp"):
            problems.append(f"pod {name} is being deleted")
        elif status.get("phase") != "Running" or not ready:
            problems.append(f"pod {name} is {status.get('phase')}, ready={ready}")
    return problems


async def delete(client: kube.Kube) -> None:
    """Remove every object `create` makes (pods at once: no kubelet would confirm)."""
    pods = kube.path_of("v1", "Pod", NAMESPACE)
    with contextlib.suppress(kube.KubeError):
        await client.request(
            "DELETE",
            pods,
            body={"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0},
            params={"labelSelector": pod_selector(), "gracePeriodSeconds": "0"},
        )
    for path in (
        f"/api/v1/namespaces/{NAMESPACE}",
        f"/api/v1/nodes/{NODE}",
        kube.path_of("coordination.k8s.io/v1", "Lease", NODE_LEASE_NAMESPACE, NODE),
    ):
        with contextlib.suppress(kube.KubeError):
            await client.request("DELETE", path)

    async def gone() -> bool:
        namespace = await client.get(f"/api/v1/namespaces/{NAMESPACE}")
        return namespace is None and await client.get(f"/api/v1/nodes/{NODE}") is None

    await _wait_for(f"namespace {NAMESPACE} and node {NODE} deleted", gone)
