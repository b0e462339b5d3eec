"""Measurement (b): calls arriving at random through a scale-down of the official worker, with and
without the companion, through the real operator.

Owns one side from a fresh namespace to its deletion: `agent-operator` (default sync period)
and an AgentWorker of the official livekit-agents worker running `official_agent.py`
(unmodified livekit-agents code that reads AGENT_NAME and POD_IP itself, as it must without the
companion), held at `replicas` with spec.companion.mode Disabled (the operator falls back to
deletion cost and SIGTERM, the worker drains its calls) or Inject (the default: POST /retire
first). Calls arrive at seeded Poisson times (the same on both sides), the AgentWorker is
patched down to `to` replicas partway, and a bounded wait lets the calls end and the victims
go. It records what happened; `companion_report` counts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentworker_operator import builders
from bench import cluster, manifests, scaledown
from bench import companion_report as results
from bench.cluster import ClusterError, Kubectl, OperatorProcess, PodEvent, PodWatch
from bench.phases import note
from tests.e2e.operator.calls import Calls, calls
from tests.rig import env as rig_env

AGENT_SCRIPT = rig_env.REPO_ROOT / "tests" / "e2e" / "operator" / "official_agent.py"
MODES = {results.WITHOUT: "Disabled", results.WITH: "Inject"}
NAME = "official"
REGISTERED = '"registered worker"'
RETIRED = "retired: taking no new job"
COMPANION_TIMEOUT_S = 120.0
END_MARGIN_S = 30.0
"""After the last call's hold time: a call without an end line by then was cut."""
SCALE_DOWN_TIMEOUT_S = 180.0
"""After the patch: the longest wait for the fleet to reach its new size."""
POLL_S = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Traffic:
    """The calls and the scale-down every side gets."""

    seed: int
    rate_per_s: float = 0.1
    """Mean call arrivals per second (Poisson)."""
    hold_s: float = 20.0
    """How long each call lasts."""
    before_s: float = 30.0
    """Arrivals before the scale-down."""
    after_s: float = 40.0
    """Arrivals after it."""
    replicas: int = 3
    """Workers before the scale-down."""
    to: int = 1
    """Workers after it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Setup:
    """What every side needs from the run."""

    rig: rig_env.RigEnv
    kubectl: Kubectl
    workdir: Path
    run_id: str
    python: Path
    """The official venv's interpreter."""


def run_side(setup: Setup, side: str, traffic: Traffic, round_: int) -> results.DrainSide:
    """One side from a fresh namespace to its deletion."""
    stem = f"{MODES[side].lower()}-{round_}"
    namespace = f"bench-companion-{setup.run_id}-{stem}"
    kubectl = setup.kubectl
    note(f"{side}, round {round_}: namespace {namespace}")
    with cluster.namespace(kubectl, namespace, credentials=setup.rig):
        log = setup.workdir / f"operator-{stem}.log"
        with OperatorProcess(kubectl, namespace, log) as operator:
            agent_name = f"bench-{setup.run_id}-{stem}"
            kubectl.apply(_agentworker(setup, namespace, agent_name, side, traffic.replicas))
            _wait_serving(setup, namespace, side, traffic.replicas)
            return _measure(setup, side, round_, namespace, agent_name, operator, traffic)


def _agentworker(
    setup: Setup, namespace: str, agent_name: str, side: str, replicas: int
) -> manifests.Manifest:
    autoscaling = manifests.build_fixed_autoscaling(replicas, busy_workers=None)
    # scale down as soon as the patch is read, all at once: the handshake is what is compared
    autoscaling["scaleDown"] = {"stabilizationWindow": "0s", "stepPods": replicas, "period": "5s"}
    return manifests.build_official_agentworker(
        name=NAME,
        namespace=namespace,
        agent_name=agent_name,
        livekit_url=setup.rig.livekit_url,
        autoscaling=autoscaling,
        command=[str(setup.python), str(AGENT_SCRIPT), "start"],
        # the rig runs pods in the repository by default, where operator/ would shadow the
        # standard library's operator module in livekit-agents' forkserver
        working_dir=str(AGENT_SCRIPT.parent),
        companion_mode=MODES[side],
    )


def _pods(kubectl: Kubectl, namespace: str) -> list[str]:
    """The AgentWorker's pods not being deleted."""
    items = kubectl.get_json("pods", "-n", namespace, "-l", cluster.agentworker_pods(NAME))
    return [
        str(p["metadata"]["name"])
        for p in items["items"]
        if not p["metadata"].get("deletionTimestamp")
    ]


def _log(setup: Setup, namespace: str, pod: str) -> str:
    path = cluster.pod_log(setup.rig, namespace, pod, builders.CONTAINER_NAME)
    return path.read_text(errors="replace") if path.exists() else ""


def _wait_serving(setup: Setup, namespace: str, side: str, replicas: int) -> None:
    """Ready, each worker registered with LiveKit (without the companion, readiness at / comes
    first), and the Companion condition as the side wants it."""
    kubectl = setup.kubectl
    cluster.wait_agentworker_ready(kubectl, namespace, NAME, replicas)
    cluster.wait_until(
        f"{replicas} workers registered with LiveKit",
        lambda: [p for p in _pods(kubectl, namespace) if REGISTERED in _log(setup, namespace, p)],
        lambda registered: len(registered) >= replicas,
        timeout_s=cluster.READY_TIMEOUT_S,
        interval_s=POLL_S,
    )
    wanted = "True" if side == results.WITH else "False"
    found = cluster.wait_until(
        f"the Companion condition {wanted}",
        lambda: _companion_condition(kubectl, namespace),
        lambda c: c.get("status") in ("True", "False") and c.get("reason") != "Waiting",
        timeout_s=COMPANION_TIMEOUT_S,
        interval_s=POLL_S,
    )
    if found.get("status") != wanted:
        raise ClusterError(f"{side}: Companion condition {found}, not {wanted}")


def _companion_condition(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    status = cluster.agentworker_status(kubectl, namespace, NAME)
    for c in status.get("conditions", []):
        if c.get("type") == "Companion":
            return {k: str(c.get(k, "")) for k in ("status", "reason", "message")}
    return {}


@dataclass(frozen=True, slots=True, kw_only=True)
class Observed:
    """What one side's calls and pod watch saw, as read when the wait was over."""

    rooms: list[str]
    patched_at: float
    observed_until: float
    started: dict[str, dict[str, Any]]
    ended: dict[str, str]
    records: list[dict[str, Any]]
    events: list[PodEvent]


def _measure(
    setup: Setup,
    side: str,
    round_: int,
    namespace: str,
    agent_name: str,
    operator: OperatorProcess,
    traffic: Traffic,
) -> results.DrainSide:
    """The calls at their arrival times, the scale-down partway, the wait for both to end."""
    kubectl = setup.kubectl
    ledger = setup.workdir / f"calls-{namespace}.jsonl"
    window_s = traffic.before_s + traffic.after_s
    schedule = results.arrivals(traffic.seed, traffic.rate_per_s, window_s)

    def scale_down() -> None:
        patch = {"spec": {"autoscaling": {"minReplicas": traffic.to, "maxReplicas": traffic.to}}}
        kubectl(
            "patch", "agentworker", NAME, "-n", namespace, "--type=merge", "-p", json.dumps(patch)
        )

    note(
        f"{side}: {len(schedule)} calls of {traffic.hold_s:.0f} s over {window_s:.0f} s, "
        f"scale-down {traffic.replicas} -> {traffic.to} at +{traffic.before_s:.0f} s"
    )
    with (
        PodWatch(kubectl, namespace, cluster.agentworker_pods(NAME)) as watch,
        calls(setup.rig, agent_name, ledger) as phone,
    ):
        rooms, patched_at, last_call_at = _drive(phone, schedule, traffic, scale_down)
        observed_until = _wait_settled(
            phone, rooms, watch, traffic, patched_at, calls_until=last_call_at + traffic.hold_s
        )
        observed = Observed(
            rooms=rooms,
            patched_at=patched_at,
            observed_until=observed_until,
            started=phone.ledger.started(),
            ended={room: str(r.get("how", "")) for room, r in phone.ledger.ended().items()},
            records=phone.ledger.records(),
            events=watch.events(),
        )
    return _side(setup, side, round_, namespace, operator, observed)


def _side(
    setup: Setup,
    side: str,
    round_: int,
    namespace: str,
    operator: OperatorProcess,
    seen: Observed,
) -> results.DrainSide:
    """What was observed, with the operator's decisions and the victims' logs."""
    decisions = [
        (cluster.unix_time(str(r["time"])), str(r.get("detail", "")))
        for r in operator.records()
        if r.get("message") == "scaling"
        and int(r.get("to", 0)) < int(r.get("from", 0))
        and cluster.unix_time(str(r["time"])) >= seen.patched_at
    ]
    busy = scaledown.busy_at_deletion(seen.events, seen.records, since=seen.patched_at)
    victims = tuple(
        results.Victim(
            pod=pod,
            marked_at=marked_at,
            gone_at=gone_at,
            calls=busy.get(pod, 0),
            retired=RETIRED in _log(setup, namespace, pod),
        )
        for pod, marked_at, gone_at in _victims(seen.events, since=seen.patched_at)
    )
    problems = (
        [] if decisions else ["no scale-down decision in the operator's log: times from the patch"]
    )
    timeline = [f"+{t - seen.patched_at:.1f} s operator: {detail}" for t, detail in decisions]
    timeline += scaledown.pod_timeline(seen.events, seen.patched_at)
    return results.DrainSide(
        side=side,
        round=round_,
        patched_at=seen.patched_at,
        decisions=tuple(t for t, _ in decisions),
        observed_until=seen.observed_until,
        victims=victims,
        dispatched=tuple(seen.rooms),
        started=tuple(r for r in seen.rooms if r in seen.started),
        ended={r: seen.ended[r] for r in seen.rooms if r in seen.ended},
        final_pods=len(_pods(setup.kubectl, namespace)),
        timeline=tuple(sorted(timeline, key=scaledown.line_offset)),
        problems=tuple(problems),
    )


def _drive(
    phone: Calls, schedule: Sequence[float], traffic: Traffic, scale_down: Callable[[], None]
) -> tuple[list[str], float, float]:
    """Each call at its arrival time, the scale-down at `before_s`: (rooms, Unix time of the
    patch, Unix time of the last call's dispatch)."""
    begin = time.time()
    steps = sorted([(t, False) for t in schedule] + [(traffic.before_s, True)])
    rooms: list[str] = []
    patched_at = last_call_at = begin
    for offset, scaling in steps:
        time.sleep(max(0.0, begin + offset - time.time()))
        if scaling:
            patched_at = time.time()
            scale_down()
            continue
        rooms += phone.start(1, hold_s=traffic.hold_s, prefix="call")
        last_call_at = time.time()
    return rooms, patched_at, last_call_at


def _wait_settled(
    phone: Calls,
    rooms: Sequence[str],
    watch: PodWatch,
    traffic: Traffic,
    patched_at: float,
    *,
    calls_until: float,
) -> float:
    """Poll until every call ended (or could have) and the fleet is down to `to` pods with no
    victim left (or time is up); the Unix time it stopped."""
    while True:
        now = time.time()
        ended = phone.ledger.ended()
        calls_done = all(r in ended for r in rooms) or now > calls_until + END_MARGIN_S
        counts = scaledown.pod_counts(watch.events(), since=patched_at)
        fleet_done = bool(counts) and counts[-1][1] == traffic.to
        if calls_done and (fleet_done or now > patched_at + SCALE_DOWN_TIMEOUT_S):
            return now
        time.sleep(POLL_S)


def _victims(events: Sequence[PodEvent], *, since: float) -> list[tuple[str, float, float | None]]:
    """(pod, Unix time it was marked for deletion, Unix time it was gone or None) of each pod
    marked after `since`."""
    marked: dict[str, float] = {}
    gone: dict[str, float] = {}
    for event in events:
        if event.t < since:
            continue
        if event.deleting and event.name not in marked:
            marked[event.name] = event.t
        if event.kind == "DELETED":
            gone[event.name] = event.t
            marked.setdefault(event.name, event.t)
    return [(pod, t, gone.get(pod)) for pod, t in marked.items()]
