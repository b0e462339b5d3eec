"""Measurement (a): calls fill the one worker -> a new worker is registered with LiveKit.

Owns the trials of the reaction: an AgentWorker of the call agent autoscaled from 1 to 3
workers, one ready worker, three calls (3 of its 4 calls: load 0.75 above loadThreshold 0.7,
so the worker is full), then the moments that follow, each from its own source: the third
call's 'start' line in the ledger, the operator's 'scaling' log line, the pod first read from a
pod watch, the new worker's own 'starting worker' and 'registered with LiveKit' log lines. Each
trial has its own AgentWorker and agent name; between trials it is deleted and its pods are
waited out (the calls are short), so every trial starts from one worker.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agentworker_operator import builders
from bench import cluster, manifests
from bench.cluster import ClusterError, Kubectl, OperatorProcess, PodWatch
from bench.phases import note
from bench.scaling_report import ReactionTrial
from tests.e2e.operator.calls import calls
from tests.rig import env as rig_env

HOLD_S = 20.0
"""How long the three calls last: past the scale-up, short enough to tear down quickly."""
STARTED_TIMEOUT_S = 60.0
REGISTERED_TIMEOUT_S = 90.0
GONE_TIMEOUT_S = HOLD_S + 90.0
REGISTERED = "registered with LiveKit"
STARTING = "starting worker"


@dataclass(frozen=True, slots=True, kw_only=True)
class Reaction:
    """Where the trials run: a namespace with the credentials Secret and an operator."""

    rig: rig_env.RigEnv
    kubectl: Kubectl
    namespace: str
    operator: OperatorProcess
    workdir: Path
    run_id: str
    side: str = ""
    """Which of `scaling_report.REACTION_SIDES` the operator runs as."""
    tag: str = "a"
    """The side in the AgentWorkers' names."""


def run_trials(setups: Sequence[Reaction], trials: int) -> list[ReactionTrial]:
    """`trials` scale-ups per setup, one after the other, the setups taking turns (so that the
    machine's moods fall on both alike); a failed trial keeps what it saw."""
    done = []
    for index in range(trials):
        for setup in setups:
            trial = run_trial(setup, index)
            total = (
                "n/a"
                if trial.registered_at is None
                else f"{trial.registered_at - trial.third_call_at:.2f} s"
            )
            note(
                f"reaction trial {index + 1}/{trials}, {setup.side}: {total} "
                + "; ".join(trial.problems)
            )
            done.append(trial)
    return done


def run_trial(setup: Reaction, index: int) -> ReactionTrial:
    """One trial: its AgentWorker made, measured, deleted and its pods gone."""
    kubectl, namespace = setup.kubectl, setup.namespace
    name = f"reaction-{index + 1}-{setup.tag}"
    agent_name = f"bench-{setup.run_id}-{name}"
    manifest = manifests.build_agentworker(
        name=name,
        namespace=namespace,
        agent_name=agent_name,
        livekit_url=setup.rig.livekit_url,
        autoscaling=manifests.build_reaction_autoscaling(),
    )
    ledger = setup.workdir / f"{name}.jsonl"
    with PodWatch(kubectl, namespace, cluster.agentworker_pods(name)) as watch:
        kubectl.apply(manifest)
        try:
            cluster.wait_agentworker_ready(kubectl, namespace, name, replicas=1)
            first = {e.name for e in watch.events()}
            with calls(setup.rig, agent_name, ledger) as phone:
                rooms = phone.start(3, hold_s=HOLD_S, prefix=name)
                started = cluster.wait_until(
                    "3 calls started",
                    phone.ledger.started,
                    lambda found: all(room in found for room in rooms),
                    timeout_s=STARTED_TIMEOUT_S,
                    interval_s=0.2,
                )
                third = max(float(started[room]["t"]) for room in rooms)
                return _observe(setup, name, third, watch, first)
        finally:
            kubectl("delete", "agentworker", name, "-n", namespace, "--wait=false", check=False)
            _wait_gone(kubectl, namespace, name)


def _observe(
    setup: Reaction, name: str, third: float, watch: PodWatch, first: set[str]
) -> ReactionTrial:
    """The moments after the third call: the decision, the pod, its process, its registration."""
    problems: list[str] = []
    pod, created, process, registered = "", None, None, None
    try:
        new = cluster.wait_until(
            "a second worker pod",
            watch.events,
            lambda events: any(e.name not in first for e in events),
            timeout_s=REGISTERED_TIMEOUT_S,
            interval_s=0.1,
        )
        event = next(e for e in new if e.name not in first)
        pod, created = event.name, event.t
        log = cluster.pod_log(setup.rig, setup.namespace, pod, builders.CONTAINER_NAME)
        registered = cluster.wait_until(
            f"{pod} registered with LiveKit",
            lambda: cluster.worker_log_time(log, REGISTERED),
            lambda found: found is not None,
            timeout_s=REGISTERED_TIMEOUT_S,
            interval_s=0.2,
        )
        process = cluster.worker_log_time(log, STARTING)
    except ClusterError as error:
        problems.append(str(error))
    decided = _decided_at(setup.operator, name)
    if decided is None:
        problems.append("no 'scaling' 1 -> 2 line in the operator's log")
    elif decided < third:
        problems.append(f"the operator scaled up {third - decided:.2f} s before the third call")
    return ReactionTrial(
        third_call_at=third,
        decided_at=decided,
        pod_created_at=created,
        process_started_at=process,
        registered_at=registered,
        pod=pod,
        event="; ".join(cluster.scale_events(setup.kubectl, setup.namespace, name, "ScaledUp")),
        problems=tuple(problems),
        side=setup.side,
    )


def _decided_at(operator: OperatorProcess, name: str) -> float | None:
    for record in operator.records():
        scaled = record.get("message") == "scaling" and record.get("from") == 1
        about = str(record.get("agentworker", ""))
        if scaled and record.get("to") == 2 and about.endswith(f"/{name}"):
            return cluster.unix_time(str(record["time"]))
    return None


def _wait_gone(kubectl: Kubectl, namespace: str, name: str) -> None:
    """The trial's pods gone: the busy worker drains its calls (HOLD_S), the new one exits."""
    started = time.monotonic()
    try:
        cluster.wait_until(
            f"the pods of {name} gone",
            lambda: kubectl.get_json("pods", "-n", namespace, "-l", cluster.agentworker_pods(name))[
                "items"
            ],
            lambda items: not items,
            timeout_s=GONE_TIMEOUT_S,
            interval_s=1.0,
        )
    except ClusterError as error:
        note(f"teardown of {name}: {error}")
    note(f"{name} torn down in {time.monotonic() - started:.0f} s")
