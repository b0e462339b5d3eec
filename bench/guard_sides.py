"""One side of one scenario of `bench.guard`: the dispatch guard on or off, through the real
operator, with real callers waiting in their rooms.

Owns a side from a fresh namespace to its deletion: the credentials Secret, `agent-operator`
(default 5 s sync period, no webhooks), an AgentWorker of the call agent of the operator's
e2e tests (`tests.e2e.operator.call_agent`, its load per call set so that a worker takes the
scenario's number of calls), the fleet brought to the scenario's starting point (scaled to zero,
warm, or filled with calls), then the measured calls: each a caller that joins its room and
then the dispatch (`Calls.start_watched`), placed at its planned time by a thread of its own.
A caller waits up to `wait_s` for an agent and hangs up; on the guard-off side a room whose
dispatch record stayed without a job for DROP_AFTER_S is counted as never served at once (the
server never retries a dropped dispatch), so that side does not wait the callers' time out.
It records what was seen; `guard_report` counts.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import cluster, guard_logs, manifests
from bench import guard_plan as plan
from bench import guard_report as report
from bench.cluster import ClusterError, Kubectl, OperatorProcess
from bench.phases import note
from tests.e2e.operator.calls import Calls, calls
from tests.rig import env as rig_env

NAME = "calls"
SCALE_TO_ZERO_AFTER = "15s"
SETUP_SCALE_DOWN = {"stabilizationWindow": "3s", "stepPods": 4, "period": "5s"}
"""The guard-on side of (i) only while it goes to zero; removed (the defaults) before the calls."""
DRAIN_TIMEOUT = "1m"
"""Bounds the namespace's deletion: a worker drains its calls at most this long."""
ZERO_TIMEOUT_S = 240.0
READY_TIMEOUT_S = 180.0
FILLER_START_TIMEOUT_S = 15.0
FULL_TIMEOUT_S = 30.0
DROP_AFTER_S = 15.0
"""Guard off: a dispatch record still without a job this long after it was made was dropped."""
SETTLE_S = 10.0
"""After the last room got its agent (or its caller gave up): watching for a second agent."""
PLACE_TIMEOUT_S = 60.0
POLL_S = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Setup:
    """What every side needs from the run."""

    rig: rig_env.RigEnv
    kubectl: Kubectl
    workdir: Path
    run_id: str


def build_fleet(
    scenario: plan.Scenario,
    side: str,
    *,
    namespace: str,
    agent_name: str,
    livekit_url: str,
    max_wait_s: float,
) -> manifests.Manifest:
    """The AgentWorker of a side: the same on both sides but the guard and minReplicas."""
    autoscaling: manifests.Manifest = {
        "enabled": True,
        "minReplicas": scenario.min_replicas[side],
        "maxReplicas": scenario.max_replicas,
        "targetLoad": 0.5,
        "scaleToZeroAfter": SCALE_TO_ZERO_AFTER,
    }
    if scenario.from_zero and scenario.min_replicas[side] == 0:
        autoscaling["scaleDown"] = dict(SETUP_SCALE_DOWN)
    manifest = manifests.build_agentworker(
        name=NAME,
        namespace=namespace,
        agent_name=agent_name,
        livekit_url=livekit_url,
        autoscaling=autoscaling,
        drain_timeout=DRAIN_TIMEOUT,
    )
    per_worker = plan.calls_per_worker(scenario.slots, plan.LOAD_THRESHOLD)
    manifest["spec"] |= {
        "loadThreshold": plan.LOAD_THRESHOLD,
        "numIdleProcesses": 1,
        "env": [{"name": "E2E_CALLS_PER_WORKER", "value": str(per_worker)}],
        "dispatchGuard": {"enabled": side == plan.GUARD_ON, "maxWait": f"{max_wait_s:.0f}s"},
    }
    return manifest


def run_side(
    setup: Setup, scenario: plan.Scenario, index: int, side: str, traffic: plan.Traffic
) -> report.SideRun:
    """One side from a fresh namespace to its deletion."""
    began = time.monotonic()
    stem = f"{scenario.key}-{'on' if side == plan.GUARD_ON else 'off'}"
    namespace = agent_name = f"bench-guard-{setup.run_id}-{stem}"
    kubectl = setup.kubectl
    note(f"{scenario.key}, {side}: namespace {namespace}")
    with cluster.namespace(kubectl, namespace, credentials=setup.rig):
        log = setup.workdir / f"operator-{stem}.log"
        source = guard_logs.source_digest()
        with OperatorProcess(kubectl, namespace, log) as operator:
            fleet = build_fleet(
                scenario,
                side,
                namespace=namespace,
                agent_name=agent_name,
                livekit_url=setup.rig.livekit_url,
                max_wait_s=traffic.wait_s,
            )
            kubectl.apply(fleet)
            _prepare(kubectl, namespace, scenario, side)
            ledger = setup.workdir / f"calls-{stem}.jsonl"
            with calls(setup.rig, agent_name, ledger) as phone:
                watch = _Watch(setup, namespace, agent_name, side, phone, traffic)
                fill_s = _fill(watch, plan.plan_fillers(scenario, traffic, index), scenario)
                watch.run(plan.plan_calls(scenario, traffic, index))
                seen = watch.rooms()
            abandoned = cluster.scale_events(kubectl, namespace, NAME, "DispatchAbandoned")
        records = operator.records()
    if guard_logs.source_digest() != source:
        watch.problems.append("the operator's or the runtime's source changed during this side")
    timeline, reissued = guard_logs.operator_story(records, watch.wall0)
    timeline += [f"DispatchAbandoned: {m}" for m in abandoned]
    server_log = guard_logs.server_log(setup.rig)
    return report.SideRun(
        scenario=scenario.key,
        side=side,
        planned=traffic.rooms,
        rooms=_with_server_view(seen, server_log),
        status=tuple(watch.status),
        reissued=reissued,
        abandoned=len(abandoned),
        server_drops=guard_logs.server_drops(server_log, agent_name),
        fill_s=fill_s,
        duration_s=time.monotonic() - began,
        timeline=tuple(timeline),
        problems=tuple(watch.problems),
        source=source,
    )


def _with_server_view(
    seen: Sequence[report.RoomSeen], server_log: Sequence[str]
) -> tuple[report.RoomSeen, ...]:
    """The rooms with what the LiveKit server's log says of them."""
    server = report.read_server_log(server_log, [r.room for r in seen])
    return tuple(
        dataclasses.replace(
            r, server_wait_s=server[r.room].wait_s, server_agents=len(server[r.room].agents)
        )
        for r in seen
    )


def _status(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    return cluster.agentworker_status(kubectl, namespace, NAME)


def _live_pods(kubectl: Kubectl, namespace: str) -> int:
    items = kubectl.get_json("pods", "-n", namespace, "-l", cluster.agentworker_pods(NAME))
    return sum(1 for p in items["items"] if not p["metadata"].get("deletionTimestamp"))


def _prepare(kubectl: Kubectl, namespace: str, scenario: plan.Scenario, side: str) -> None:
    """The fleet at the scenario's starting point: at zero with no pod left (guard on, (i)),
    else its minReplicas workers available (registered with LiveKit)."""
    low = scenario.min_replicas[side]
    if low == 0:
        cluster.wait_until(
            "the idle fleet at zero",
            lambda: _status(kubectl, namespace),
            lambda s: s.get("desiredReplicas") == 0 and s.get("replicas") == 0,
            timeout_s=ZERO_TIMEOUT_S,
            interval_s=POLL_S,
        )
        cluster.wait_until(
            "no worker pod left",
            lambda: _live_pods(kubectl, namespace),
            lambda n: n == 0,
            timeout_s=ZERO_TIMEOUT_S,
            interval_s=POLL_S,
        )
        # the defaults from here on, as on the other side: nothing scales down during the calls
        patch = {"spec": {"autoscaling": {"scaleDown": None}}}
        kubectl(
            "patch", "agentworker", NAME, "-n", namespace, "--type=merge", "-p", json.dumps(patch)
        )
        return
    cluster.wait_until(
        f"{low} workers available",
        lambda: _status(kubectl, namespace),
        lambda s: s.get("available") == low and s.get("replicas") == low,
        timeout_s=READY_TIMEOUT_S,
        interval_s=POLL_S,
    )


def _fill(watch: _Watch, holds: Sequence[float], scenario: plan.Scenario) -> float:
    """The fillers one at a time (each waits for its job to start: a burst would find the
    worker's load not measured yet), then the fleet full; seconds it took."""
    if not holds:
        return 0.0
    started = time.monotonic()
    phone = watch.phone
    for hold_s in holds:
        (room,) = phone.start(1, hold_s=hold_s, prefix="fill")
        try:
            cluster.wait_until(
                f"filler {room} started",
                phone.ledger.started,
                functools.partial(_holds, room),
                timeout_s=FILLER_START_TIMEOUT_S,
                interval_s=0.2,
            )
        except ClusterError as error:
            watch.problems.append(f"filling: {error}")
    try:
        cluster.wait_until(
            f"{scenario.max_replicas} workers full",
            lambda: _status(watch.kubectl, watch.namespace),
            lambda s: s.get("full") == scenario.max_replicas,
            timeout_s=FULL_TIMEOUT_S,
            interval_s=POLL_S,
        )
    except ClusterError as error:
        watch.problems.append(f"filling: {error}")
    note(f"fleet filled with {len(holds)} calls")
    return time.monotonic() - started


def _holds(key: str, found: Mapping[str, object]) -> bool:
    return key in found


class _Watch:
    """The measured calls of one side: placing them, watching their rooms, giving up."""

    def __init__(
        self,
        setup: Setup,
        namespace: str,
        agent_name: str,
        side: str,
        phone: Calls,
        traffic: plan.Traffic,
    ) -> None:
        self.rig = setup.rig
        self.kubectl = setup.kubectl
        self.namespace = namespace
        self.agent_name = agent_name
        self.side = side
        self.phone = phone
        self.traffic = traffic
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        self.status: list[report.StatusSample] = []
        self.problems: list[str] = []
        self._placed: dict[str, tuple[plan.PlannedCall, float]] = {}
        self._lock = threading.Lock()
        self._gave_up: dict[str, float] = {}
        self._dropped: set[str] = set()

    def _now(self) -> float:
        return time.monotonic() - self.t0

    def _place(self, call: plan.PlannedCall) -> None:
        time.sleep(max(0.0, call.offset_s - self._now()))
        (room,) = self.phone.start_watched(1, hold_s=call.hold_s, prefix="guard")
        at = self._now()
        with self._lock:
            self._placed[room] = (call, at)

    def run(self, planned: Sequence[plan.PlannedCall]) -> None:
        """Every call at its time, watched until each got an agent, gave up or (guard off) was
        dropped, then SETTLE_S more."""
        self.t0, self.wall0 = time.monotonic(), time.time()
        note(f"{self.side}: {len(planned)} calls over {max(c.offset_s for c in planned):.0f} s")
        with concurrent.futures.ThreadPoolExecutor(len(planned), "place") as pool:
            placing = [pool.submit(self._place, call) for call in planned]
            settled_at: float | None = None
            while settled_at is None or self._now() < settled_at + SETTLE_S:
                self._sample()
                waiting = self._look()
                done = all(f.done() for f in placing)
                if settled_at is None and done and not waiting:
                    settled_at = self._now()
                if self._now() > planned[-1].offset_s + self.traffic.wait_s + PLACE_TIMEOUT_S:
                    self.problems.append(f"watch ended with {len(waiting)} rooms still waiting")
                    break
                time.sleep(POLL_S)
            for future in placing:
                error = future.exception(timeout=PLACE_TIMEOUT_S)
                if error is not None:
                    self.problems.append(f"a call could not be placed: {error!r}")
        for room in self._placed.keys() - self._gave_up.keys():
            self.phone.hang_up(room)

    def _sample(self) -> None:
        try:
            s = _status(self.kubectl, self.namespace)
        except ClusterError as error:
            self.problems.append(f"status unread at +{self._now():.0f} s: {error}")
            return
        self.status.append(
            report.StatusSample(
                t_s=self._now(),
                replicas=int(s.get("replicas") or 0),
                available=int(s.get("available") or 0),
                full=int(s.get("full") or 0),
                pending=int(s.get("pendingDispatches") or 0),
            )
        )

    def _look(self) -> list[str]:
        """Rooms still waiting for an agent; callers past their wait hang up."""
        with self._lock:
            placed = dict(self._placed)
        waiting = []
        for room, (_, at) in placed.items():
            if room in self._gave_up or room in self._dropped or self._joins(room):
                continue
            if self._now() - at >= self.traffic.wait_s:
                self.phone.hang_up(room)
                self._gave_up[room] = self._now()
                continue
            waiting.append(room)
        if self.side == plan.GUARD_OFF:
            old = [r for r in waiting if self._now() - placed[r][1] >= DROP_AFTER_S]
            self._dropped |= guard_logs.jobless(self.rig, self.agent_name, old, DROP_AFTER_S)
            waiting = [r for r in waiting if r not in self._dropped]
        return waiting

    def _joins(self, room: str) -> list[tuple[float, str]]:
        return [
            (t - self.t0, who) for t, what, who in self.phone.timeline(room) if what == "joined"
        ]

    def rooms(self) -> tuple[report.RoomSeen, ...]:
        jobs = Counter(r["room"] for r in self.phone.ledger.records() if r.get("event") == "start")
        seen = [
            report.RoomSeen(
                room=room,
                planned_s=call.offset_s,
                dispatched_s=at,
                hold_s=call.hold_s,
                joins=tuple(self._joins(room)),
                leaves=tuple(
                    (t - self.t0, who)
                    for t, what, who in self.phone.timeline(room)
                    if what == "left"
                ),
                jobs=jobs[room],
                gave_up_s=self._gave_up.get(room),
                dropped=room in self._dropped,
            )
            for room, (call, at) in self._placed.items()
        ]
        return tuple(sorted(seen, key=lambda r: r.dispatched_s))
