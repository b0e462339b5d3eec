"""The phantom node's kubelet: it starts the pods the Deployments made, as fake workers.

No kubelet runs on the observing benchmark's phantom node (`bench.phantom`), so this module does
what one would for each pod the scheduler binds there: it gives the pod an address and writes
its status through the status subresource (Running, its conditions True, its containers
running, the init containers done, podIP). The address is a fake worker's
(`bench.fake_fleet.address`), which is how the fake worker server, which knows only addresses,
answers each pod as the plan says. The pods of AgentWorker `aw` play the fake workers
aw * n ... aw * n + n - 1 (n: workers_per_agentworker), each pod the lowest one no other pod of
it holds, oldest pod first, as an address pool hands addresses out; a pod finding them all
taken waits, as on a node out of addresses. The pods' names are the ReplicaSets' (generated),
so the benchmark learns from `Placed` which pod plays which worker.

It runs while the pods are made (`start_pods`, bounded), not in the measured windows: a pod
made later stays Pending, and `bench.phantom.pods_report` says so after the windows. `place`,
`held`, `pod_status` and `describe` are pure; `start_pods` talks to the API server.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentworker_operator import builders, kube
from bench import fake_fleet, phantom
from bench.fake_fleet import FleetShape

Manifest = dict[str, Any]

HOST_IP = "127.0.0.1"
"""The phantom node's address, as the pods' status gives it."""
START_TIMEOUT_S = 300.0
"""Bound of the wait for every fake worker of 1,000 to have a pod: the ReplicaSets make the pods
at the controller-manager's API rate, and the scheduler binds them."""
POLL_S = 1.0
"""How often the pods bound to the phantom node are listed, for 1,000 workers."""
CONCURRENCY = 24
"""Status writes in flight at once."""
CONDITIONS = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")
"""The conditions a kubelet sets True on a pod whose containers run (PodScheduled is the
scheduler's, kept as it wrote it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Placed:
    """A pod started on the phantom node, and the fake worker it plays."""

    name: str
    uid: str
    index: int
    """The fake worker's index in the plan; its address is the pod's IP."""


def _meta(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    meta: Mapping[str, Any] = pod.get("metadata") or {}
    return meta


def _age(pod: Mapping[str, Any]) -> tuple[str, str]:
    meta = _meta(pod)
    return str(meta.get("creationTimestamp") or ""), str(meta.get("name") or "")


def held(placed: Mapping[str, Placed], pods: Sequence[Mapping[str, Any]]) -> dict[str, Placed]:
    """The placed pods (by uid) still among `pods` and not being deleted; the workers of the
    others are free again."""
    alive = {_meta(p).get("uid") for p in pods if not _meta(p).get("deletionTimestamp")}
    return {uid: p for uid, p in placed.items() if uid in alive}


def place(
    shape: FleetShape, pods: Sequence[Mapping[str, Any]], placed: Mapping[str, Placed]
) -> list[Placed]:
    """The pods among `pods` (bound to the phantom node) to start now, oldest first, each with
    the lowest fake worker of its AgentWorker that no pod holds (`placed`, by uid, and those
    placed before it here). Pods already placed, being deleted, of no benchmark AgentWorker, or
    whose AgentWorker's workers are all taken are left alone."""
    per = shape.workers_per_agentworker
    owners = {fake_fleet.agentworker_name(aw): aw for aw in range(shape.agentworkers)}
    taken = {p.index for p in placed.values()}
    new = []
    for pod in sorted(pods, key=_age):
        meta = _meta(pod)
        aw = owners.get(str((meta.get("labels") or {}).get(builders.LABEL_INSTANCE)))
        if aw is None or meta.get("deletionTimestamp") or meta.get("uid") in placed:
            continue
        free = next((i for i in range(aw * per, (aw + 1) * per) if i not in taken), None)
        if free is not None:
            taken.add(free)
            new.append(Placed(name=str(meta["name"]), uid=str(meta["uid"]), index=free))
    return new


def pod_status(pod: Mapping[str, Any], ip: str, now: datetime.datetime) -> Manifest:
    """The status a kubelet writes once the pod's containers run on `ip` (a merge patch: every
    list whole, PodScheduled as the scheduler wrote it)."""
    t = phantom.timestamp(now)
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    scheduled = [c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"]
    written: Manifest = {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "hostIP": HOST_IP,
        "hostIPs": [{"ip": HOST_IP}],
        "startTime": t,
        "conditions": [
            *(scheduled or [{"type": "PodScheduled", "status": "True", "lastTransitionTime": t}]),
            *({"type": kind, "status": "True", "lastTransitionTime": t} for kind in CONDITIONS),
        ],
        "containerStatuses": [
            {
                **_container_status(container),
                "ready": True,
                "started": True,
                "state": {"running": {"startedAt": t}},
            }
            for container in spec.get("containers") or []
        ],
    }
    if spec.get("initContainers"):
        done = {"exitCode": 0, "reason": "Completed", "startedAt": t, "finishedAt": t}
        written["initContainerStatuses"] = [
            {**_container_status(c), "ready": True, "started": False, "state": {"terminated": done}}
            for c in spec["initContainers"]
        ]
    return written


def _container_status(container: Mapping[str, Any]) -> Manifest:
    return {
        "name": container.get("name"),
        "image": container.get("image"),
        "imageID": "",
        "restartCount": 0,
    }


def describe(shape: FleetShape, pods: Sequence[Mapping[str, Any]], placed: int) -> str:
    """Where the worker pods are (`pods`: every one in the namespace), for a wait that ran out:
    how many there are, bound to the phantom node and started, and why the first pending one is
    not bound (its PodScheduled condition, as the scheduler wrote it)."""
    bound = [p for p in pods if (p.get("spec") or {}).get("nodeName") == phantom.NODE]
    text = (
        f"{len(pods)} worker pods of {shape.workers}, {len(bound)} bound to {phantom.NODE}, "
        f"{placed} started"
    )
    for pod in sorted(pods, key=_age):
        if (pod.get("spec") or {}).get("nodeName"):
            continue
        for c in (pod.get("status") or {}).get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") != "True":
                name = _meta(pod).get("name")
                return f"{text}; {name} not scheduled: {c.get('reason')}: {c.get('message')}"
    return text


async def _gather_bounded(calls: Sequence[Callable[[], Awaitable[object]]]) -> None:
    """Run every call, CONCURRENCY at a time; the first failure cancels the rest."""
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(call: Callable[[], Awaitable[object]]) -> None:
        async with limit:
            await call()

    async with asyncio.TaskGroup() as group:
        for call in calls:
            group.create_task(one(call))


async def _start(
    client: kube.Kube, starts: Sequence[tuple[Mapping[str, Any], Placed]]
) -> list[Placed]:
    """Write each pod's running status; the pods started (not those gone meanwhile)."""
    started: list[Placed] = []

    async def start(pod: Mapping[str, Any], placed: Placed) -> None:
        path = kube.path_of("v1", "Pod", phantom.NAMESPACE, placed.name)
        now = datetime.datetime.now(datetime.UTC)
        try:
            await client.patch_status(path, pod_status(pod, fake_fleet.address(placed.index), now))
        except kube.KubeError as error:
            if error.status != 404:
                raise
            return
        started.append(placed)

    await _gather_bounded([functools.partial(start, pod, p) for pod, p in starts])
    return started


async def start_pods(
    client: kube.Kube,
    shape: FleetShape,
    *,
    check: Callable[[], None] = lambda: None,
    timeout_s: float = START_TIMEOUT_S,
    poll_s: float = POLL_S,
) -> dict[str, Placed]:
    """Start the pods bound to the phantom node, listing them every `poll_s` (a list of
    thousands of pods is megabytes: a larger fleet lists less often), until every fake worker
    has one; the pods started, by uid. `check` is called each time and may raise (the operator
    making the Deployments exited); phantom.SetupError when `timeout_s` runs out."""
    path = kube.path_of("v1", "Pod", phantom.NAMESPACE)
    bound_here = {
        "labelSelector": phantom.pod_selector(),
        "fieldSelector": f"spec.nodeName={phantom.NODE}",
    }
    placed: dict[str, Placed] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        check()
        pods = (await client.request("GET", path, params=bound_here)).get("items") or []
        placed = held(placed, pods)
        by_uid = {_meta(pod).get("uid"): pod for pod in pods}
        starts = [(by_uid[p.uid], p) for p in place(shape, pods, placed)]
        placed.update((p.uid, p) for p in await _start(client, starts))
        if len(placed) == shape.workers:
            return placed
        if time.monotonic() > deadline:
            everything = await client.list_items(path, phantom.pod_selector())
            raise phantom.SetupError(
                f"not every fake worker had a running pod within {timeout_s:.0f}s: "
                + describe(shape, everything, len(placed))
            )
        await asyncio.sleep(poll_s)


def names(placed: Mapping[str, Placed]) -> dict[int, str]:
    """Which pod plays each fake worker: index -> pod name."""
    return {p.index: p.name for p in placed.values()}


def uids(placed: Mapping[str, Placed]) -> dict[str, str]:
    """The pods started: name -> uid."""
    return {p.name: p.uid for p in placed.values()}
