"""Measurement (c), the headline: 10 calls running while a fleet is scaled 3 -> 1, per side.

Owns the three sides, run one after the other, each in its own namespace (deleted on the way
out): a plain Deployment of the call agent with the default 30 s grace period, scaled by
`kubectl scale`; and this operator's AgentWorker of the same agent (autoscaling held at 3, then
patched to 1), once with the default `scaleDown.busyWorkers` (WaitForIdle) and once with Drain.
On each side: 3 ready workers, the same calls (3 of them real, with a caller in the room), the
scale-down as soon as every call started, then a bounded wait for the calls to end and the
fleet to reach one pod. It records what happened; `scaling_report` counts the losses.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import cluster, manifests
from bench.cluster import ClusterError, Kubectl, OperatorProcess, PodEvent, PodWatch
from bench.phases import note
from bench.scaling_report import ScaleDownSide
from tests.e2e.operator.calls import CallerOutcome, Calls, calls
from tests.rig import env as rig_env

STARTED_TIMEOUT_S = 60.0
END_MARGIN_S = 40.0
"""After the last call's hold time: a call without an end line by then was killed."""
SCALE_DOWN_TIMEOUT_S = 240.0
"""After the scale-down: the longest wait for the fleet to reach one pod."""
CALLERS_TIMEOUT_S = 60.0
POLL_S = 1.0
PLAIN = "plain Deployment (30 s grace)"
WAIT_FOR_IDLE = "operator, WaitForIdle (default)"
DRAIN = "operator, Drain"
SIDES = (PLAIN, WAIT_FOR_IDLE, DRAIN)


@dataclass(frozen=True, slots=True, kw_only=True)
class Load:
    """The calls every side gets."""

    calls: int = 10
    real: int = 3
    hold_s: float = 90.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Bench:
    """What every side needs from the run."""

    rig: rig_env.RigEnv
    kubectl: Kubectl
    workdir: Path
    run_id: str
    load: Load


@dataclass(frozen=True, slots=True, kw_only=True)
class Fleet:
    """One side's workers as the measurement sees them: where they are and how to scale them."""

    namespace: str
    deployment: str
    selector: str
    agent_name: str
    scale_down: Callable[[], None]
    scale_log: Callable[[float], list[str]]
    """Offsets and messages of the scale steps after the given Unix time."""
    problems: list[str]


def run_side(bench: Bench, side: str) -> ScaleDownSide:
    """One side from a fresh namespace to its deletion."""
    stem = {PLAIN: "plain", WAIT_FOR_IDLE: "waitforidle", DRAIN: "drain"}[side]
    namespace = f"bench-scaling-{bench.run_id}-{stem}"
    agent_name = f"bench-{bench.run_id}-{stem}"
    note(f"{side}: namespace {namespace}")
    with cluster.namespace(bench.kubectl, namespace, credentials=bench.rig):
        if side == PLAIN:
            fleet = _plain_fleet(bench, namespace, agent_name)
            return _measure(bench, side, fleet, how="kubectl scale deployment --replicas=1")
        busy = None if side == WAIT_FOR_IDLE else "Drain"
        log = bench.workdir / f"operator-{stem}.log"
        with OperatorProcess(bench.kubectl, namespace, log) as operator:
            fleet = _operator_fleet(bench, namespace, agent_name, operator, busy)
            how = "spec.autoscaling patched to minReplicas 1, maxReplicas 1"
            return _measure(bench, side, fleet, how=how)


def _plain_fleet(bench: Bench, namespace: str, agent_name: str) -> Fleet:
    name = "plain-agent"
    kubectl = bench.kubectl
    kubectl.apply(
        manifests.build_plain_deployment(
            name=name,
            namespace=namespace,
            agent_name=agent_name,
            livekit_url=bench.rig.livekit_url,
            replicas=3,
        )
    )
    cluster.wait_until(
        "3 ready workers of the plain Deployment",
        lambda: kubectl.get_json("deployment", name, "-n", namespace).get("status") or {},
        lambda found: found.get("readyReplicas") == 3,
        timeout_s=cluster.READY_TIMEOUT_S,
        interval_s=1.0,
    )

    def scale_down() -> None:
        kubectl("scale", "deployment", name, "-n", namespace, "--replicas=1")

    return Fleet(
        namespace=namespace,
        deployment=name,
        selector=f"app={name}",
        agent_name=agent_name,
        scale_down=scale_down,
        scale_log=lambda _: ["+0.0 s kubectl scale: 3 -> 1 replicas"],
        problems=[],
    )


def _operator_fleet(
    bench: Bench, namespace: str, agent_name: str, operator: OperatorProcess, busy: str | None
) -> Fleet:
    name = "calls"
    kubectl = bench.kubectl
    kubectl.apply(
        manifests.build_agentworker(
            name=name,
            namespace=namespace,
            agent_name=agent_name,
            livekit_url=bench.rig.livekit_url,
            autoscaling=manifests.build_fixed_autoscaling(3, busy_workers=busy),
        )
    )
    cluster.wait_agentworker_ready(kubectl, namespace, name, replicas=3)
    problems = []
    stored = kubectl.get_json("agentworker", name, "-n", namespace)["spec"]["autoscaling"]
    kept = (stored.get("scaleDown") or {}).get("busyWorkers", "WaitForIdle")
    if kept != (busy or "WaitForIdle"):
        problems.append(f"the API server kept scaleDown.busyWorkers {kept}, not {busy}")

    def scale_down() -> None:
        patch = {"spec": {"autoscaling": {"minReplicas": 1, "maxReplicas": 1}}}
        kubectl(
            "patch", "agentworker", name, "-n", namespace, "--type=merge", "-p", json.dumps(patch)
        )

    def scale_log(since: float) -> list[str]:
        return [
            f"+{cluster.unix_time(str(r['time'])) - since:.1f} s operator: {r.get('detail')}"
            for r in operator.records()
            if r.get("message") == "scaling" and cluster.unix_time(str(r["time"])) >= since
        ]

    return Fleet(
        namespace=namespace,
        deployment=name,
        selector=cluster.agentworker_pods(name),
        agent_name=agent_name,
        scale_down=scale_down,
        scale_log=scale_log,
        problems=problems,
    )


def _measure(bench: Bench, side: str, fleet: Fleet, *, how: str) -> ScaleDownSide:
    """The calls, the scale-down, and the wait for both to end."""
    load, kubectl = bench.load, bench.kubectl
    problems = list(fleet.problems)
    ledger = bench.workdir / f"calls-{fleet.namespace}.jsonl"
    with PodWatch(kubectl, fleet.namespace, fleet.selector) as watch:
        with calls(bench.rig, fleet.agent_name, ledger) as phone:
            dispatched = phone.start(load.calls, hold_s=load.hold_s, real=load.real)
            started = _wait_started(phone, dispatched, problems)
            rooms = [r for r in dispatched if r in started]
            per_pod = collections.Counter(str(started[r]["pod_ip"]) for r in rooms)
            note(f"{side}: {len(rooms)} calls on {dict(per_pod)}; scaling 3 -> 1")
            scaled_at = time.time()
            fleet.scale_down()
            last_start = max((float(started[r]["t"]) for r in rooms), default=scaled_at)
            replicas_one_at = _wait_settled(
                kubectl, fleet, phone, rooms, watch, scaled_at, calls_until=last_start + load.hold_s
            )
            outcomes = _caller_outcomes(phone, problems)
            ended = {room: str(r.get("how", "")) for room, r in phone.ledger.ended().items()}
            records = phone.ledger.records()
        counts = pod_counts(watch.events(), since=scaled_at)
        final = len(kubectl.get_json("pods", "-n", fleet.namespace, "-l", fleet.selector)["items"])
        timeline = fleet.scale_log(scaled_at) + pod_timeline(watch.events(), scaled_at)
    real_rooms = tuple(r for r in dispatched[: load.real] if r in started)
    seen = {o.room: o for o in outcomes}
    return ScaleDownSide(
        side=side,
        operator=side != PLAIN,
        how=how,
        rooms=tuple(rooms),
        real_rooms=real_rooms,
        ended={r: ended[r] for r in rooms if r in ended},
        cut_callers=tuple(o.room for o in outcomes if o.cut and o.room in rooms),
        callers_unknown=tuple(r for r in real_rooms if r not in seen),
        calls_per_pod=dict(per_pod),
        busy_sigtermed=busy_at_deletion(watch.events(), records, since=scaled_at),
        replicas_one_after_s=_after(replicas_one_at, scaled_at),
        one_live_pod_after_s=_after(_first(counts, live=True), scaled_at),
        one_pod_after_s=_after(_first(counts, live=False), scaled_at),
        final_pods=final,
        scale_log=tuple(sorted(timeline, key=line_offset)),
        problems=tuple(problems),
    )


def _wait_started(phone: Calls, rooms: Sequence[str], problems: list[str]) -> dict[str, Any]:
    try:
        return cluster.wait_until(
            f"{len(rooms)} calls started",
            phone.ledger.started,
            lambda found: all(room in found for room in rooms),
            timeout_s=STARTED_TIMEOUT_S,
            interval_s=0.5,
        )
    except ClusterError:
        started = phone.ledger.started()
        problems.append(f"{sum(r not in started for r in rooms)} calls never started")
        return started


def _wait_settled(
    kubectl: Kubectl,
    fleet: Fleet,
    phone: Calls,
    rooms: Sequence[str],
    watch: PodWatch,
    scaled_at: float,
    *,
    calls_until: float,
) -> float | None:
    """Poll until every call ended (or was lost) and one pod is left (or time is up).

    Returns the Unix time the Deployment was first seen asking for 1 replica (None: never)."""
    replicas_one_at = None
    while True:
        now = time.time()
        spec = kubectl.get_json("deployment", fleet.deployment, "-n", fleet.namespace)["spec"]
        if replicas_one_at is None and spec.get("replicas") == 1:
            replicas_one_at = now
        ended = phone.ledger.ended()
        calls_done = all(r in ended for r in rooms) or now > calls_until + END_MARGIN_S
        one_pod = _first(pod_counts(watch.events(), since=scaled_at), live=False) is not None
        fleet_done = one_pod or now > scaled_at + SCALE_DOWN_TIMEOUT_S
        if calls_done and fleet_done:
            return replicas_one_at
        time.sleep(POLL_S)


def _caller_outcomes(phone: Calls, problems: list[str]) -> list[CallerOutcome]:
    try:
        return phone.caller_outcomes(timeout_s=CALLERS_TIMEOUT_S)
    except TimeoutError:
        problems.append("a caller had no outcome in time: every real call counted as cut")
        return []


def pod_counts(events: Sequence[PodEvent], *, since: float) -> list[tuple[float, int, int]]:
    """(time, pods, pods not being deleted) after each watch event from `since` on."""
    present: dict[str, bool] = {}
    counts = []
    for event in events:
        if event.kind == "DELETED":
            present.pop(event.name, None)
        else:
            present[event.name] = event.deleting
        if event.t >= since:
            counts.append((event.t, len(present), sum(not d for d in present.values())))
    return counts


def busy_at_deletion(
    events: Sequence[PodEvent], records: Sequence[dict[str, Any]], *, since: float
) -> dict[str, int]:
    """Pods sent SIGTERM (marked for deletion) after `since` while they held calls: their calls.

    A call is on a pod from its ledger 'start' line to its 'end' line (or forever, without one);
    the pod is matched by its IP, which every ledger line carries."""
    marked: dict[str, tuple[float, str]] = {}
    ips: dict[str, str] = {}
    for event in events:
        ips[event.name] = event.ip or ips.get(event.name, "")
        if event.deleting and event.t >= since and event.name not in marked:
            marked[event.name] = (event.t, ips[event.name])
    starts = {r["room"]: r for r in records if r.get("event") == "start"}
    ends = {r["room"]: float(r["t"]) for r in records if r.get("event") == "end"}
    busy = {}
    for pod, (t, ip) in marked.items():
        held = sum(
            1
            for room, start in starts.items()
            if start.get("pod_ip") == ip and float(start["t"]) <= t < ends.get(room, float("inf"))
        )
        if held:
            busy[pod] = held
    return busy


def _first(counts: Sequence[tuple[float, int, int]], *, live: bool) -> float | None:
    """When the pods (or those not being deleted) were first down to one."""
    return next((t for t, total, alive in counts if (alive if live else total) == 1), None)


def pod_timeline(events: Sequence[PodEvent], since: float) -> list[str]:
    """When each pod was marked for deletion and when it was gone, as offsets."""
    lines, marked = [], set()
    for event in events:
        if event.t < since:
            continue
        if event.deleting and event.kind != "DELETED" and event.name not in marked:
            marked.add(event.name)
            lines.append(f"+{event.t - since:.1f} s pod {event.name}: deleting (SIGTERM)")
        elif event.kind == "DELETED":
            lines.append(f"+{event.t - since:.1f} s pod {event.name}: gone")
    return lines


def line_offset(line: str) -> float:
    return float(line[1:].split(" ", 1)[0])


def _after(moment: float | None, since: float) -> float | None:
    return None if moment is None else round(moment - since, 2)
