"""Autoscaling on the whole rig: real workers made by the operator, real dispatches, real calls.

The agent (`call_agent`) holds each call for as long as its dispatch says and reports the share
of its 4-call capacity in use as its load, so calls drive the autoscaler. Some calls are real:
a caller participant joins the room and counts the call as cut if the agent leaves early. Every
call writes its start and its end to a ledger the test reads. The operator syncs every second
(the default is 5 s) so the tests run in seconds, with short stabilization windows.
"""

from __future__ import annotations

import json
import logging
import signal
import urllib.request
from typing import Any

import psutil
import pytest

from tests.e2e.conftest import Kubectl
from tests.e2e.operator.calls import ENTRYPOINT, Calls
from tests.e2e.operator.conftest import (
    OperatorProcess,
    agent_name,
    condition,
    example,
    get_json,
)
from tests.e2e.operator.test_agentworker import NAME, apply, aw, pods, wait_ready
from tests.rig import env as rig_env
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

logger = logging.getLogger(__name__)
VICTIM_COST = "-2147483648"
FAST = ("--sync-period=1", "--resync-period=10")


@pytest.fixture
def operator_args() -> tuple[str, ...]:
    """The operator observes the workers every second (the default is 5 s)."""
    return FAST


def fleet(rig: rig_env.RigEnv, namespace: str, **autoscaling: Any) -> dict[str, Any]:
    """The example AgentWorker running the call agent, autoscaled with short windows."""
    manifest = example(
        rig,
        agentName=agent_name(namespace),
        entrypoint=ENTRYPOINT,
        numIdleProcesses=1,
        drainTimeout="5m",
        shutdownProcessTimeout="10s",
    )
    fast = {"stabilizationWindow": "3s", "stepPods": 4, "period": "5s"}
    # a new fleet starts at spec.replicas (the example's 2) within the bounds: start at the
    # minimum, so that the tests' first workers are all there is
    manifest["spec"]["replicas"] = autoscaling.get("minReplicas", 1)
    manifest["spec"]["autoscaling"] = {
        "enabled": True,
        "minReplicas": 1,
        "maxReplicas": 4,
        "targetLoad": 0.5,
        "scaleUp": {"stepPods": 4, "period": "5s"},
        **autoscaling,
        "scaleDown": {**fast, **autoscaling.get("scaleDown", {})},
    }
    return manifest


def patch_autoscaling(kubectl: Kubectl, namespace: str, **fields: Any) -> None:
    body = json.dumps({"spec": {"autoscaling": fields}})
    kubectl("patch", "aw", NAME, "-n", namespace, "--type=merge", "-p", body)


def live_pods(kubectl: Kubectl, namespace: str) -> dict[str, dict[str, Any]]:
    """Worker pods not being deleted, by name."""
    return {
        p["metadata"]["name"]: p
        for p in pods(kubectl, namespace)
        if not p["metadata"].get("deletionTimestamp")
    }


def pod_by_ip(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    return {
        p["status"].get("podIP", ""): p["metadata"]["name"]
        for p in pods(kubectl, namespace)
        if p.get("status")
    }


def events(kubectl: Kubectl, namespace: str, reason: str) -> list[str]:
    items = get_json(kubectl, "events", "-n", namespace)["items"]
    return [e["message"] for e in items if e.get("reason") == reason]


def status_of(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    found: dict[str, Any] = aw(kubectl, namespace).get("status") or {}
    return found


def wait_status(kubectl: Kubectl, namespace: str, what: str, ok: Any, timeout_s: float = 90) -> Any:
    return wait_for(
        what, lambda: status_of(kubectl, namespace), ok, timeout_s=timeout_s, interval_s=0.5
    )


def wait_calls_started(phone: Calls, rooms: list[str], timeout_s: float = 60) -> dict[str, Any]:
    return wait_for(
        f"{len(rooms)} calls running",
        phone.ledger.started,
        lambda started: all(room in started for room in rooms),
        timeout_s=timeout_s,
    )


def assert_every_call_completed(
    phone: Calls, rooms: list[str], timeout_s: float, *, real: bool = True
) -> None:
    """Each call ended by running its full hold time, and no caller saw its agent leave early."""
    ended = wait_for(
        f"{len(rooms)} calls ended",
        phone.ledger.ended,
        lambda done: all(room in done for room in rooms),
        timeout_s=timeout_s,
        interval_s=1,
    )
    lost = {room: ended[room] for room in rooms if ended[room]["how"] != "completed"}
    assert not lost, f"calls cut: {lost}"
    if not real:
        return
    outcomes = phone.caller_outcomes(timeout_s=60)
    assert outcomes, "some calls are real ones"
    assert all(o.agent_joined for o in outcomes), outcomes
    cut = [o for o in outcomes if o.cut]
    assert not cut, f"callers saw their agent leave early: {cut}"


def three_workers_one_call(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, phone: Calls
) -> tuple[list[str], str]:
    """Three ready workers (minReplicas 3), one real 40 s call on one of them, seen by the
    operator; the call's room and the busy pod's name."""
    apply(kubectl, namespace, fleet(rig, namespace, minReplicas=3))
    wait_ready(kubectl, namespace, replicas=3)
    rooms = phone.start(1, hold_s=40, real=1)
    started = wait_calls_started(phone, rooms)
    busy = pod_by_ip(kubectl, namespace)[started[rooms[0]]["pod_ip"]]
    wait_status(kubectl, namespace, "the call observed", lambda s: s.get("activeJobs") == 1)
    return rooms, busy


def worker_pid(pod_ip: str) -> int:
    """The worker process listening on the pod's address (the rig runs pods as processes)."""
    for conn in psutil.net_connections(kind="tcp"):
        listening = conn.status == psutil.CONN_LISTEN and conn.laddr
        if listening and conn.pid and (conn.laddr.ip, conn.laddr.port) == (pod_ip, 8081):
            return conn.pid
    raise AssertionError(f"no process listens on {pod_ip}:8081")


def test_load_rises_replicas_rise_and_the_new_worker_takes_the_new_calls(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess, phone: Calls,
) -> None:  # fmt: skip
    apply(kubectl, namespace, fleet(rig, namespace))
    wait_ready(kubectl, namespace, replicas=1)
    (first,) = live_pods(kubectl, namespace).values()
    first_ip = first["status"]["podIP"]
    busy = phone.start(3, hold_s=120)  # 3 of 4 calls: load 0.75, above loadThreshold 0.7
    wait_calls_started(phone, busy)
    status = wait_status(
        kubectl, namespace, "two ready workers after the scale-up",
        lambda s: s.get("desiredReplicas") == 2 and s.get("readyReplicas") == 2,
    )  # fmt: skip
    # the worker says it is full as it takes the third call (its warm headroom is gone), and
    # its load says 0.75 once measured: whichever the operator hears first scales it up
    scaled_up = events(kubectl, namespace, "ScaledUp")
    assert scaled_up, "a ScaledUp Event"
    assert scaled_up[0] in {
        "load 0.75 > target 0.50: 1 -> 2 workers",
        "0 of 1 warm workers available: 1 -> 2 workers",
    }, scaled_up
    assert_events_are_conditions_and_scales(kubectl, namespace)
    new = phone.start(2, hold_s=120)
    started = wait_calls_started(phone, new)
    assert all(started[room]["pod_ip"] != first_ip for room in new), started
    status = wait_status(
        kubectl, namespace, "5 active jobs in the status", lambda s: s.get("activeJobs") == 5
    )
    assert status["full"] == 1
    assert 0 < status["load"] <= 1
    row = kubectl("get", "aw", NAME, "-n", namespace, "--no-headers").stdout.split()
    assert row[4] == "5", f"the Jobs column: {row}"
    annotations = get_json(kubectl, "pod", first["metadata"]["name"], "-n", namespace)[
        "metadata"
    ].get("annotations", {})
    assert annotations.get("karpenter.sh/do-not-disrupt") == "true"
    # Written when the worker turned busy, with the calls it held then (1 to 3): not refreshed on
    # every scrape, only right before a scale-down.
    cost = annotations.get("controller.kubernetes.io/pod-deletion-cost")
    assert cost in {"1", "2", "3"}, f"deletion cost {cost!r}"
    exposition = operator.metrics()
    assert f'agentworker_active_jobs{{name="{NAME}",namespace="{namespace}"}} 5.0' in exposition
    assert "agentworker_scale_events_total" in exposition
    writes = annotation_writes(operator, namespace)
    assert 1 <= writes <= 4, f"annotations written on busy/idle changes only, not {writes} times"


# the reasons of the operator's conditions (status.py) and of its scale and recovery Events
OPERATOR_EVENT_REASONS = {
    "ScaledUp", "ScaledDown", "CallRedispatched", "RecoveryForbidden",
    "WorkersReady", "WorkersNotReady", "WorkersAvailable", "WorkersStarting", "NoAvailableWorker",
    "WaitingForObservation", "AsExpected", "AutoscalingDisabled", "LiveKitUnreachable",
    "WorkersFailing", "RolloutStuck", "SecretNotFound", "SecretKeyMissing", "InvalidSpec",
    "ApplyFailed", "WorkersUnreadable", "ControlSecretConflict", "AnotherOperator",
    "Paused", "Resumed",
}  # fmt: skip


def assert_events_are_conditions_and_scales(kubectl: Kubectl, namespace: str) -> None:
    """The AgentWorker's Events are its condition changes and scale decisions, all from the
    operator: no copy of a handler's log line (kopf's "Logging" Events)."""
    posted = [
        e for e in get_json(kubectl, "events", "-n", namespace)["items"]
        if e["involvedObject"]["kind"] == "AgentWorker"
    ]  # fmt: skip
    assert "ScaledUp" in {e["reason"] for e in posted}  # the operator's Events are there
    assert {e["reason"] for e in posted} <= OPERATOR_EVENT_REASONS, posted
    assert {e["source"].get("component") for e in posted} == {"agentworker-operator"}, posted


def annotation_writes(operator: OperatorProcess, namespace: str) -> float:
    """How often the operator patched pod annotations (on busy/idle changes, not every sync)."""
    prefix = (
        f'agentworker_operator_pod_annotation_writes_total{{name="{NAME}",namespace="{namespace}"}}'
    )
    for line in operator.metrics().splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


def test_load_falls_and_exactly_the_idle_workers_are_removed_while_the_call_goes_on(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess, phone: Calls,
) -> None:  # fmt: skip
    rooms, busy = three_workers_one_call(kubectl, rig, namespace, phone)
    before = set(live_pods(kubectl, namespace))
    patch_autoscaling(kubectl, namespace, minReplicas=1)
    wait_for(
        "the fleet down to its busy worker",
        lambda: set(live_pods(kubectl, namespace)),
        lambda names: names == {busy},
        timeout_s=60,
    )
    removed = before - {busy}
    assert len(removed) == 2
    gone = wait_for(
        "the idle workers gone",
        lambda: {p["metadata"]["name"] for p in pods(kubectl, namespace)},
        lambda names: not names & removed,
        timeout_s=60,
    )
    assert busy in gone
    assert any("3 -> 1 workers" in m for m in events(kubectl, namespace, "ScaledDown"))
    log = operator.logs()
    for name in removed:
        assert name in log, f"{name} was chosen as a victim by the operator"
    assert_every_call_completed(phone, rooms, timeout_s=120)
    assert status_of(kubectl, namespace)["desiredReplicas"] == 1


def test_nine_calls_survive_a_scale_down_of_busy_workers_that_drain(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess, phone: Calls,
) -> None:  # fmt: skip
    manifest = fleet(
        rig, namespace, minReplicas=3, maxReplicas=3, scaleDown={"busyWorkers": "Drain"}
    )
    apply(kubectl, namespace, manifest)
    wait_ready(kubectl, namespace, replicas=3)
    # 9: each worker takes 3 (load 0.75 past loadThreshold 0.7 after its third, and no more)
    rooms = phone.start(9, hold_s=45, real=3)
    started = wait_calls_started(phone, rooms)
    assert len({r["pod_ip"] for r in started.values()}) == 3, "the calls spread over 3 workers"
    wait_status(kubectl, namespace, "9 calls observed", lambda s: s.get("activeJobs") == 9)
    patch_autoscaling(kubectl, namespace, minReplicas=1, maxReplicas=1)
    wait_for(
        "one worker left in the Deployment",
        lambda: get_json(kubectl, "deployment", NAME, "-n", namespace)["spec"]["replicas"],
        lambda replicas: replicas == 1,
        timeout_s=60,
    )
    draining = wait_status(
        kubectl, namespace, "the victims draining", lambda s: s.get("draining", 0) >= 1
    )
    assert draining["activeJobs"] == 9, "draining workers keep their calls"
    full = wait_for(
        "FleetFull once the one worker left is full",
        lambda: aw(kubectl, namespace),
        lambda obj: condition(obj, "FleetFull").get("status") == "True",
        timeout_s=60,
    )
    assert condition(full, "FleetFull")["reason"] == "NoAvailableWorker"
    assert events(kubectl, namespace, "NoAvailableWorker"), "a Warning Event says so"
    assert_every_call_completed(phone, rooms, timeout_s=150)
    wait_for(
        "the drained workers gone",
        lambda: pods(kubectl, namespace),
        lambda items: len(items) == 1,
        timeout_s=60,
    )


def start_rollout(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, phone: Calls, calls: int, real: int
) -> tuple[set[str], list[str]]:  # fmt: skip
    """Three fixed workers holding `calls` calls of 45 s, then a spec change that rolls them;
    the old workers' names and the calls' rooms."""
    manifest = fleet(rig, namespace)
    manifest["spec"]["autoscaling"] = {"enabled": False}
    manifest["spec"]["replicas"] = 3
    apply(kubectl, namespace, manifest)
    wait_ready(kubectl, namespace, replicas=3)
    old = set(live_pods(kubectl, namespace))
    rooms = phone.start(calls, hold_s=45, real=real)
    wait_calls_started(phone, rooms)
    wait_status(
        kubectl, namespace, f"{calls} calls observed", lambda s: s.get("activeJobs") == calls
    )  # fmt: skip
    manifest["spec"]["env"] = [{"name": "GREETING", "value": "version two"}]
    apply(kubectl, namespace, manifest)
    return old, rooms


def test_nine_calls_survive_a_rollout_and_new_calls_go_to_new_workers(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess, phone: Calls,
) -> None:  # fmt: skip
    old, rooms = start_rollout(kubectl, rig, namespace, phone, calls=9, real=3)
    status = wait_status(
        kubectl, namespace, "calls left on old workers in the status",
        lambda s: s.get("oldWorkerJobs", 0) > 0,
    )  # fmt: skip
    logger.info("calls on old workers during the rollout: %s", status["oldWorkerJobs"])
    new = wait_for(
        "three new workers ready",
        lambda: live_pods(kubectl, namespace),
        lambda live: (
            len(live) == 3
            and not set(live) & old
            and all(condition(p, "Ready").get("status") == "True" for p in live.values())
        ),
        timeout_s=120,
    )
    new_ips = {p["status"]["podIP"] for p in new.values()}
    later = phone.start(2, hold_s=10)
    started = wait_calls_started(phone, later)
    assert {started[room]["pod_ip"] for room in later} <= new_ips
    assert_every_call_completed(phone, rooms + later, timeout_s=150)
    wait_status(
        kubectl, namespace, "no call left on old workers", lambda s: s["oldWorkerJobs"] == 0
    )


def sync_rounds(operator: OperatorProcess) -> float:
    for line in operator.metrics().splitlines():
        if line.startswith("agentworker_operator_sync_duration_seconds_count"):
            return float(line.split()[-1])
    return 0.0


def wait_sync_rounds(operator: OperatorProcess, rounds: int) -> None:
    start = sync_rounds(operator)
    wait_for(
        f"{rounds} more sync rounds",
        lambda: sync_rounds(operator),
        lambda now: now >= start + rounds,
        timeout_s=30,
    )


def worker_document(pod: dict[str, Any]) -> dict[str, Any]:
    """The worker's own /worker document, read from its pod's address."""
    url = f"http://{pod['status']['podIP']}:8081/worker"
    with urllib.request.urlopen(url, timeout=5) as answer:
        document: dict[str, Any] = json.load(answer)
    return document


def test_a_scale_down_blocked_by_a_silent_worker_retires_nobody_and_the_rest_serve(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess,
) -> None:  # fmt: skip
    apply(kubectl, namespace, fleet(rig, namespace, minReplicas=3))
    wait_ready(kubectl, namespace, replicas=3)
    silent_name, silent = sorted(live_pods(kubectl, namespace).items())[0]
    others = {
        name: pod for name, pod in live_pods(kubectl, namespace).items() if name != silent_name
    }
    process = psutil.Process(worker_pid(silent["status"]["podIP"]))
    process.send_signal(signal.SIGSTOP)
    try:
        wait_for(
            "the silent worker unknown and not ready",
            lambda: (aw(kubectl, namespace), pods(kubectl, namespace)),
            lambda found: (
                (found[0].get("status") or {}).get("unknownWorkers") == [silent_name]
                and not any(
                    c.get("type") == "Ready" and c.get("status") == "True"
                    for p in found[1]
                    if p["metadata"]["name"] == silent_name
                    for c in p["status"].get("conditions") or []
                )
            ),
            timeout_s=60,
        )
        patch_autoscaling(kubectl, namespace, minReplicas=1)
        held = wait_for(
            "the scale-down held back by the silent worker",
            lambda: aw(kubectl, namespace),
            lambda obj: condition(obj, "ScalingLimited").get("reason") == "WorkersNotReady",
            timeout_s=60,
        )
        assert silent_name in condition(held, "ScalingLimited")["message"]
        # the held scale-down took nobody out of service: the others never retired, and serve
        retired: set[str] = set()

        def look() -> float:
            retired.update(n for n, p in others.items() if worker_document(p)["retired"])
            return sync_rounds(operator)

        start = sync_rounds(operator)
        wait_for("5 more sync rounds", look, lambda now: now >= start + 5, timeout_s=30)
        assert not retired, f"retired while the scale-down was held: {retired}"
        # still serving: available to LiveKit by their own account and the operator's (a call
        # is not placed here: LiveKit may offer it to the stopped worker, which still holds its
        # registration, and drop it when no answer comes, which is the dispatch issue's matter)
        for name, pod in others.items():
            assert worker_document(pod)["state"] == "available", f"{name} does not serve"
        assert (aw(kubectl, namespace).get("status") or {}).get("available") == 2
        assert set(live_pods(kubectl, namespace)) == {silent_name, *others}
    finally:
        process.send_signal(signal.SIGCONT)
    wait_for(
        "the scale-down once the worker answers again",
        lambda: live_pods(kubectl, namespace),
        lambda live: len(live) == 1,
        timeout_s=90,
    )


def test_with_the_operator_stopped_deleting_the_agentworker_and_namespace_completes(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess,
) -> None:  # fmt: skip
    apply(kubectl, namespace, fleet(rig, namespace))
    wait_ready(kubectl, namespace, replicas=1)
    assert not aw(kubectl, namespace)["metadata"].get("finalizers"), "no finalizer on it"
    operator.stop()
    kubectl("delete", "aw", NAME, "-n", namespace, "--timeout=60s")
    kubectl("delete", "namespace", namespace, "--timeout=120s")
    done = kubectl("get", "namespace", namespace, check=False)
    assert done.returncode != 0
    assert "NotFound" in done.stderr
