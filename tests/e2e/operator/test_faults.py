"""The fault suite: one fault at a time on the whole rig while calls run, every call counted.

Each test starts calls (some real: a caller in the room counts its call as cut when the agent
leaves early; every call writes its start and its end to the ledger), injects one fault, and
counts the calls running when it hit, those that completed and those lost, and how long the
fleet took to recover. Expected: no call lost but those whose own process died, each reported
failed with its reason; workers register again; the operator converges with no duplicate
objects. Each test adds its row to the table the run prints at its end (`fault_table.py`).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import psutil
import pytest

from tests.e2e.conftest import Kubectl
from tests.e2e.operator import fault_table
from tests.e2e.operator.calls import Calls
from tests.e2e.operator.conftest import OperatorProcess, get_json
from tests.e2e.operator.test_agentworker import NAME, apply, listed, pods, wait_ready
from tests.e2e.operator.test_autoscaling import (
    FAST,
    VICTIM_COST,
    events,
    fleet,
    live_pods,
    patch_autoscaling,
    pod_by_ip,
    start_rollout,
    wait_calls_started,
    wait_status,
    worker_pid,
)
from tests.faultproxy import ThreadedFaultProxy
from tests.rig import control_plane
from tests.rig import env as rig_env
from tests.waiting import wait_for

# alone: some restart the API server, pause etcd or restart LiveKit, and the table of faults
# is printed by a run of one process
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.alone,
    pytest.mark.timeout(420),
    pytest.mark.usefixtures("fault_rows"),
]

CONTAINER = "agent-worker"
RETIRED = "retired: taking no new job"
EXPIRED = "retirement expired, taking jobs again"
DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


@pytest.fixture
def operator_args() -> tuple[str, ...]:
    return FAST


@dataclass(frozen=True, slots=True)
class Tally:
    running: int
    completed: int
    lost: list[str]
    interrupted: int = 0
    """Real calls whose agent vanished and came back (the call went on after a gap)."""
    longest_gap_s: float = 0.0


def tally(
    phone: Calls, rooms: list[str], *, timeout_s: float, dead: set[str] | None = None
) -> Tally:
    """Wait for every call but those in `dead` (their process was killed) to end; count them.

    A call is lost when it did not end `completed` in the ledger, or its caller saw the agent
    leave early.
    """
    alive = [room for room in rooms if room not in (dead or set())]
    ended = wait_for(
        f"{len(alive)} calls ended",
        phone.ledger.ended,
        lambda done: all(room in done for room in alive),
        timeout_s=timeout_s,
        interval_s=1,
    )
    outcomes = {o.room: o for o in phone.caller_outcomes(timeout_s=90)}
    lost = sorted(
        room
        for room in rooms
        if ended.get(room, {}).get("how") != "completed"
        or (room in outcomes and outcomes[room].cut)
    )
    interrupted = [o for room, o in outcomes.items() if room in rooms and o.interruptions]
    return Tally(
        running=len(rooms),
        completed=len(rooms) - len(lost),
        lost=lost,
        interrupted=len(interrupted),
        longest_gap_s=max((o.longest_gap_s for o in interrupted), default=0.0),
    )


def record(
    fault: str, counted: Tally, recovery_s: float, recovered: str, note: str = ""
) -> None:  # fmt: skip
    if counted.interrupted:
        gaps = f"{counted.interrupted} real calls resumed after a gap of up to "
        note = "; ".join(filter(None, [note, gaps + f"{counted.longest_gap_s:.1f} s"]))
    fault_table.record(
        fault_table.Row(
            fault=fault,
            running=counted.running,
            completed=counted.completed,
            lost=len(counted.lost),
            recovery_s=recovery_s,
            recovered=recovered,
            note=note,
        )
    )


def assert_no_duplicates(kubectl: Kubectl, namespace: str) -> None:
    """One Deployment, one active ReplicaSet, at most one of each other child, one Secret."""
    assert len(listed(kubectl, "deployment", namespace)) == 1
    for kind in ("service", "poddisruptionbudget"):
        items = listed(kubectl, kind, namespace)
        assert len(items) <= 1, f"{kind}: {[i['metadata']['name'] for i in items]}"
    active = [
        rs["metadata"]["name"]
        for rs in listed(kubectl, "replicaset", namespace)
        if rs["spec"].get("replicas")
    ]
    assert len(active) == 1, f"active ReplicaSets: {active}"
    secrets = get_json(kubectl, "secrets", "-n", namespace)["items"]
    controls = [s for s in secrets if s["metadata"]["name"] == f"{NAME}-control"]
    assert len(controls) == 1


def pod_log(rig: rig_env.RigEnv, namespace: str, pod: str) -> list[dict[str, Any]]:
    """The worker container's JSON log records (the rig's runner keeps one file per container)."""
    path = rig.logs_dir / "pods" / f"{namespace}_{pod}_{CONTAINER}.log"
    records = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def logged(rig: rig_env.RigEnv, namespace: str, pod: str, message: str) -> bool:
    """Whether the pod's worker logged the message."""
    return any(r.get("message") == message for r in pod_log(rig, namespace, pod))


def registrations(rig: rig_env.RigEnv, namespace: str, pod: str) -> int:
    return sum(
        1 for r in pod_log(rig, namespace, pod) if r.get("message") == "registered with LiveKit"
    )


def first_call_answered(phone: Calls, prefix: str, timeout_s: float = 90) -> float:
    """Dispatch one short call; the seconds until it runs (how soon the fleet answers again)."""
    began = time.monotonic()
    (room,) = phone.start(1, hold_s=3, prefix=prefix)
    wait_calls_started(phone, [room], timeout_s=timeout_s)
    return time.monotonic() - began


def test_operator_killed_during_a_scale_up(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess, phone: Calls,
) -> None:  # fmt: skip
    apply(kubectl, namespace, fleet(rig, namespace))
    wait_ready(kubectl, namespace, replicas=1)
    rooms = phone.start(3, hold_s=45, real=2)  # load 0.75 on the one worker: a scale-up
    wait_calls_started(phone, rooms)
    wait_for(
        "the scale-up written to the Deployment",
        lambda: get_json(kubectl, "deployment", NAME, "-n", namespace)["spec"]["replicas"],
        lambda replicas: replicas >= 2,
        timeout_s=60,
        interval_s=0.05,
    )
    operator.kill()  # before the new worker is up
    killed = time.monotonic()
    operator.start()
    wait_ready(kubectl, namespace, replicas=2)
    recovery_s = time.monotonic() - killed
    status = wait_status(kubectl, namespace, "3 calls observed", lambda s: s["activeJobs"] == 3)
    assert status["desiredReplicas"] == 2, "scaled up once, not twice"
    assert len(events(kubectl, namespace, "ScaledUp")) <= 1
    assert_no_duplicates(kubectl, namespace)
    counted = tally(phone, rooms, timeout_s=120)
    record("operator SIGKILLed during a scale-up", counted, recovery_s, "2 workers ready")
    assert not counted.lost


RETIREMENT_S = 60.0
"""How long a retired worker waits for its SIGTERM before it serves again (the runtime's)."""


# a long lease: with etcd paused the operator cannot renew it, and would stop itself before
# it reached its scale-down
@pytest.mark.parametrize("operator_args", [(*FAST, "--lease-duration=120")])
def test_operator_killed_between_retire_and_the_replicas_change_and_down_past_the_retirement(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess, phone: Calls,
) -> None:  # fmt: skip
    # a 10 s window: the scale-down cannot start before etcd is paused below
    slow = {"stabilizationWindow": "10s"}
    apply(kubectl, namespace, fleet(rig, namespace, minReplicas=3, scaleDown=slow))
    wait_ready(kubectl, namespace, replicas=3)
    rooms = phone.start(2, hold_s=150, real=2)
    started = wait_calls_started(phone, rooms)
    busy = {pod_by_ip(kubectl, namespace)[started[room]["pod_ip"]] for room in rooms}
    idle = sorted(set(live_pods(kubectl, namespace)) - busy)  # both calls may share a worker
    wait_for(
        "the calls observed and their workers protected",
        lambda: live_pods(kubectl, namespace),
        lambda live: all(
            (live[name]["metadata"].get("annotations") or {}).get(DO_NOT_DISRUPT) == "true"
            for name in busy
        ),
        timeout_s=60,
    )
    patch_autoscaling(kubectl, namespace, minReplicas=1)
    wait_for(
        "the operator has seen the new minimum",
        lambda: get_json(kubectl, "agentworker", NAME, "-n", namespace),
        lambda obj: (
            (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
        ),
        timeout_s=30,
    )
    # From here the API server can store nothing: the operator's victim annotation and its
    # replicas change both wait, so a kill once the worker retired lands between the two
    control_plane.pause("etcd")
    try:
        retired = wait_for(
            f"one of {idle} retired",
            lambda: [pod for pod in idle if logged(rig, namespace, pod, RETIRED)],
            bool,
            timeout_s=60,
            interval_s=0.1,
        )
        operator.kill()
    finally:
        control_plane.resume("etcd")
    killed = time.monotonic()
    deployment = get_json(kubectl, "deployment", NAME, "-n", namespace)
    assert deployment["spec"]["replicas"] == 3, "the replicas changed before the kill"
    wait_for(
        f"the operator down past the {RETIREMENT_S:.0f} s retirement",
        time.monotonic,
        lambda now: now - killed >= RETIREMENT_S + 10,
        timeout_s=RETIREMENT_S + 20,
    )
    for pod in retired:
        assert logged(rig, namespace, pod, EXPIRED), f"{pod} did not serve again"
    operator.start()
    wait_for(
        "the fleet down to its busy workers",
        lambda: live_pods(kubectl, namespace),
        lambda live: set(live) == busy,
        timeout_s=90,
    )
    recovery_s = time.monotonic() - killed
    for name, worker in live_pods(kubectl, namespace).items():
        annotations = worker["metadata"].get("annotations") or {}
        assert annotations.get(DO_NOT_DISRUPT) == "true", f"{name} lost its protection"
        assert annotations.get(DELETION_COST) != VICTIM_COST, f"{name} is a victim while busy"
    assert_no_duplicates(kubectl, namespace)
    counted = tally(phone, rooms, timeout_s=180)
    record(
        "operator SIGKILLed between /retire and the replicas change, down 70 s",
        counted,
        recovery_s,
        "only the busy workers left",
    )
    assert not counted.lost


def outage_fleet(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, phone: Calls
) -> list[str]:  # fmt: skip
    """Two workers with six calls (three real), seen by the operator."""
    apply(kubectl, namespace, fleet(rig, namespace, minReplicas=2))
    wait_ready(kubectl, namespace, replicas=2)
    rooms = phone.start(6, hold_s=60, real=3)
    wait_calls_started(phone, rooms)
    wait_status(kubectl, namespace, "6 calls observed", lambda s: s.get("activeJobs") == 6)
    return rooms


class Supervisor:
    """Starts the operator again when it exits, as its Deployment's kubelet would."""

    def __init__(self, operator: OperatorProcess) -> None:
        self.operator = operator
        self.restarts = 0

    def check(self) -> None:
        if self.operator.restart_if_exited():
            self.restarts += 1


def converge_after_outage(
    kubectl: Kubectl, namespace: str, supervisor: Supervisor, timeout_s: float = 120
) -> float:  # fmt: skip
    """Ask for a third worker; the seconds until the operator has one ready and sees the calls."""
    back = time.monotonic()
    patch_autoscaling(kubectl, namespace, minReplicas=3)

    def ready_workers() -> int:
        supervisor.check()
        status = get_json(kubectl, "agentworker", NAME, "-n", namespace).get("status") or {}
        return int(status.get("readyReplicas") or 0)

    wait_for("a third worker ready", ready_workers, lambda n: n == 3, timeout_s=timeout_s)
    wait_status(kubectl, namespace, "6 calls observed", lambda s: s.get("activeJobs") == 6)
    return time.monotonic() - back


def survive_control_plane_outage(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, operator: OperatorProcess,
    phone: Calls, fault: str, outage: Callable[[], str],
) -> None:  # fmt: skip
    """Calls on the fleet, `outage()` (what it says goes in the note), then the operator must
    converge (restarted whenever it exits, as its Deployment would) and every call complete."""
    rooms = outage_fleet(kubectl, rig, namespace, phone)
    said = outage()
    supervisor = Supervisor(operator)
    recovery_s = converge_after_outage(kubectl, namespace, supervisor)
    assert_no_duplicates(kubectl, namespace)
    counted = tally(phone, rooms, timeout_s=120)
    note = "; ".join(filter(None, [said, f"operator restarts: {supervisor.restarts}"]))
    record(fault, counted, recovery_s, "a new worker ready, calls seen", note)
    assert not counted.lost


def test_api_server_restarted(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess, phone: Calls,
) -> None:  # fmt: skip
    def restart() -> str:
        return f"down {control_plane.restart('kube-apiserver'):.0f} s"

    survive_control_plane_outage(
        kubectl, rig, namespace, operator, phone, "API server restarted", restart
    )  # fmt: skip


def test_etcd_paused_for_20_s(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess, phone: Calls,
) -> None:  # fmt: skip
    def pause() -> str:
        control_plane.pause("etcd")
        try:
            paused = time.monotonic()
            wait_for("20 s of paused etcd", time.monotonic, lambda now: now - paused >= 20)
        finally:
            control_plane.resume("etcd")
        return ""

    survive_control_plane_outage(
        kubectl, rig, namespace, operator, phone, "etcd paused 20 s", pause
    )  # fmt: skip


def test_livekit_restarted_with_20_calls(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess, phone: Calls,
) -> None:  # fmt: skip
    manifest = fleet(rig, namespace, minReplicas=2, maxReplicas=2)
    # 20 calls of 40 per worker: however LiveKit splits them, each worker stays under the
    # loadThreshold (0.7), so the call placed after the restart has a worker to go to (with 12,
    # a 9/11 split left both workers full and that call unanswered)
    manifest["spec"]["env"] = [{"name": "E2E_CALLS_PER_WORKER", "value": "40"}]
    apply(kubectl, namespace, manifest)
    wait_ready(kubectl, namespace, replicas=2)
    workers = set(live_pods(kubectl, namespace))
    rooms = phone.start(20, hold_s=60, real=5)
    wait_calls_started(phone, rooms)
    wait_status(kubectl, namespace, "20 calls observed", lambda s: s.get("activeJobs") == 20)
    before = {pod: registrations(rig, namespace, pod) for pod in workers}
    down_s = control_plane.restart("livekit")
    back = time.monotonic()
    wait_for(
        "every worker registered again",
        lambda: {pod: registrations(rig, namespace, pod) for pod in workers},
        lambda now: all(now[pod] > before[pod] for pod in workers),
        timeout_s=60,
    )
    recovery_s = time.monotonic() - back
    answered_s = first_call_answered(phone, "after-livekit")
    wait_status(kubectl, namespace, "the calls still observed", lambda s: s["activeJobs"] >= 20)
    counted = tally(phone, rooms, timeout_s=150)
    note = f"LiveKit down {down_s:.0f} s; a new call answered {answered_s:.1f} s after it was back"
    record("LiveKit restarted", counted, recovery_s, "every worker registered again", note)
    assert not counted.lost, counted


@pytest.fixture
def proxy(rig: rig_env.RigEnv) -> Iterator[ThreadedFaultProxy]:
    """A fault proxy in front of the rig's LiveKit acting on the workers' /agent connections only
    (their jobs' room connections go through it untouched)."""
    upstream = urlparse(rig.livekit_url)
    assert upstream.hostname
    assert upstream.port
    with ThreadedFaultProxy(upstream.hostname, upstream.port, paths=("/agent",)) as running:
        yield running


def proxied_fleet(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, phone: Calls,
    proxy: ThreadedFaultProxy, hold_s: float,
) -> list[str]:  # fmt: skip
    """Two workers reaching LiveKit through the proxy, six calls (three real) on them."""
    manifest = fleet(rig, namespace, minReplicas=2, maxReplicas=2)
    manifest["spec"]["livekit"]["url"] = proxy.url
    # 3 calls of 10 per worker: room for the call that shows the fleet answers after the fault
    manifest["spec"]["env"] = [{"name": "E2E_CALLS_PER_WORKER", "value": "10"}]
    apply(kubectl, namespace, manifest)
    wait_ready(kubectl, namespace, replicas=2)
    wait_for("both workers connected through the proxy", lambda: proxy.live, lambda n: n == 2)
    rooms = phone.start(6, hold_s=hold_s, real=3)
    wait_calls_started(phone, rooms)
    wait_status(kubectl, namespace, "6 calls observed", lambda s: s.get("activeJobs") == 6)
    return rooms


def test_workers_connections_cut(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess, phone: Calls, proxy: ThreadedFaultProxy,
) -> None:  # fmt: skip
    rooms = proxied_fleet(kubectl, rig, namespace, phone, proxy, hold_s=45)
    before = proxy.connections
    proxy.cut()
    cut = time.monotonic()
    wait_for(
        "both workers connected again",
        lambda: (proxy.connections, proxy.live),
        lambda seen: seen[0] >= before + 2 and seen[1] == 2,
        timeout_s=60,
    )
    recovery_s = time.monotonic() - cut
    answered_s = first_call_answered(phone, "after-cut")
    counted = tally(phone, rooms, timeout_s=120)
    note = f"a new call answered {answered_s:.1f} s after"
    record("every worker's LiveKit connection cut", counted, recovery_s, "registered again", note)
    assert not counted.lost, counted


def test_workers_connections_stalled_for_40_s(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess, phone: Calls, proxy: ThreadedFaultProxy,
) -> None:  # fmt: skip
    rooms = proxied_fleet(kubectl, rig, namespace, phone, proxy, hold_s=80)
    pods_now = set(live_pods(kubectl, namespace))
    before = {pod: registrations(rig, namespace, pod) for pod in pods_now}
    proxy.stall()  # nothing moves either way, nothing is closed
    try:
        stalled = time.monotonic()
        wait_for("40 s of stall", time.monotonic, lambda now: now - stalled >= 40)
        lost = wait_for(
            "both workers noticed the dead connection",
            lambda: [
                r for pod in pods_now for r in pod_log(rig, namespace, pod)
                if r.get("message") == "lost the connection to LiveKit"
            ],
            lambda found: len(found) >= 2,
            timeout_s=5,
        )  # fmt: skip
    finally:
        proxy.resume()
    resumed = time.monotonic()
    wait_for(
        "every worker registered again",
        lambda: {pod: registrations(rig, namespace, pod) for pod in pods_now},
        lambda now: all(now[pod] > before[pod] for pod in pods_now),
        timeout_s=60,
    )
    recovery_s = time.monotonic() - resumed
    answered_s = first_call_answered(phone, "after-stall")
    counted = tally(phone, rooms, timeout_s=150)
    note = (
        f"{len(lost)} workers noticed it in the stall; a new call answered {answered_s:.1f} s after"
    )
    record(
        "every worker's LiveKit connection stalled 40 s",
        counted,
        recovery_s,
        "registered again",
        note,
    )
    assert not counted.lost, counted


def test_a_killed_job_process_loses_only_its_own_call_and_is_reported_failed(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess, phone: Calls,
) -> None:  # fmt: skip
    apply(kubectl, namespace, fleet(rig, namespace, minReplicas=2))
    wait_ready(kubectl, namespace, replicas=2)
    rooms = phone.start(6, hold_s=40, real=3)
    started = wait_calls_started(phone, rooms)
    wait_status(kubectl, namespace, "6 calls observed", lambda s: s.get("activeJobs") == 6)
    victim = rooms[0]  # a real call: its caller sees the agent go
    pod = pod_by_ip(kubectl, namespace)[started[victim]["pod_ip"]]
    job_id = next(
        r["job_id"]
        for r in pod_log(rig, namespace, pod)
        if r.get("message") == "job started" and r.get("room") == victim
    )
    os.kill(int(started[victim]["pid"]), signal.SIGKILL)
    killed = time.monotonic()
    failed = wait_for(
        "the job reported failed",
        lambda: [
            r
            for r in pod_log(rig, namespace, pod)
            if r.get("message") == "job failed" and r.get("job_id") == job_id
        ],
        lambda found: len(found) == 1,
        timeout_s=30,
    )
    wait_status(kubectl, namespace, "5 calls observed", lambda s: s.get("activeJobs") == 5)
    recovery_s = time.monotonic() - killed
    counted = tally(phone, rooms, timeout_s=120, dead={victim})
    reason = f"{failed[0]['reason']}: {failed[0].get('error', '')}"
    record("a job process SIGKILLed", counted, recovery_s, "the worker reports 5 calls", reason)
    assert counted.lost == [victim], counted
    assert failed[0]["reason"] not in ("", "success")


def test_killed_fork_servers_take_no_call_with_them(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess, phone: Calls,
) -> None:  # fmt: skip
    manifest = fleet(rig, namespace, minReplicas=2, maxReplicas=2)
    # 3 calls of 10 per worker: the new calls go to the workers whose fork server died
    manifest["spec"]["env"] = [{"name": "E2E_CALLS_PER_WORKER", "value": "10"}]
    apply(kubectl, namespace, manifest)
    wait_ready(kubectl, namespace, replicas=2)
    rooms = phone.start(6, hold_s=40, real=3)
    wait_calls_started(phone, rooms)
    wait_status(kubectl, namespace, "6 calls observed", lambda s: s.get("activeJobs") == 6)
    fork_servers = []
    busy_ips = {call["pod_ip"] for call in phone.ledger.started().values()}
    for ip in busy_ips:
        worker = psutil.Process(worker_pid(ip))
        fork_servers += [
            child
            for child in worker.children()
            if "multiprocessing.forkserver" in " ".join(child.cmdline())
        ]
    assert len(fork_servers) == len(busy_ips), fork_servers
    for fork_server in fork_servers:
        fork_server.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    psutil.wait_procs(fork_servers, timeout=10)
    wait_status(kubectl, namespace, "still 6 calls", lambda s: s.get("activeJobs") == 6)
    later = phone.start(2, hold_s=5, prefix="after-fork-server")
    wait_calls_started(phone, later)
    recovery_s = time.monotonic() - killed
    counted = tally(phone, rooms, timeout_s=120)
    record(
        "the fork server of each busy worker SIGKILLed",
        counted,
        recovery_s,
        "new calls run (new fork servers)",
    )
    assert not tally(phone, later, timeout_s=60).lost
    assert not counted.lost, counted


def test_every_worker_sigtermed_during_a_rollout(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess, phone: Calls,
) -> None:  # fmt: skip
    old, rooms = start_rollout(kubectl, rig, namespace, phone, calls=9, real=3)
    wait_for(
        "a new worker running",
        lambda: [
            p for p in pods(kubectl, namespace)
            if p["metadata"]["name"] not in old and p.get("status", {}).get("podIP")
        ],
        lambda new: bool(new),
        timeout_s=60,
    )  # fmt: skip
    signalled = 0
    for pod in pods(kubectl, namespace):  # old and new alike, the main process alone
        ip = pod.get("status", {}).get("podIP")
        if ip:
            try:
                os.kill(worker_pid(ip), signal.SIGTERM)
                signalled += 1
            except AssertionError:  # not listening yet: nothing to signal
                continue
    sent = time.monotonic()
    new = wait_for(
        "three new workers ready",
        lambda: live_pods(kubectl, namespace),
        lambda live: (
            len(live) == 3
            and not set(live) & old
            and all(p["status"].get("containerStatuses") for p in live.values())
            and all(c.get("ready") for p in live.values() for c in p["status"]["containerStatuses"])
        ),
        timeout_s=180,
    )
    later = phone.start(2, hold_s=5, prefix="after-rollout")
    started = wait_calls_started(phone, later)
    recovery_s = time.monotonic() - sent
    assert {started[room]["pod_ip"] for room in later} <= {
        p["status"]["podIP"] for p in new.values()
    }
    counted = tally(phone, rooms, timeout_s=150)
    assert not tally(phone, later, timeout_s=60).lost
    wait_status(
        kubectl, namespace, "no call left on old workers", lambda s: s["oldWorkerJobs"] == 0
    )
    assert_no_duplicates(kubectl, namespace)
    record(
        "every worker SIGTERMed during a rollout",
        counted,
        recovery_s,
        "3 new workers ready, new calls on them",
        f"{signalled} workers signalled",
    )
    assert not counted.lost, counted
