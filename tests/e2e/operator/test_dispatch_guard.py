"""The dispatch guard on the rig: dispatches the LiveKit server gave to no worker are held, count
as demand, and are dispatched again once a worker can take them; one agent per room at most.

The LiveKit server of the rig is the real one: a dispatch that finds no registered worker, or
only full ones, is dropped, and its record stays in the room with no job. Each test first shows
that the server did drop it (the record has no job, no agent is in the room, the status counts
it), so that what follows can fail for the right reason.

1. From zero: the fleet reaches 0 workers after scaleToZeroAfter, a real call (a caller waiting
   in its room) wakes it, the caller gets its agent and a full call, and the fleet returns to 0.
2. A full fleet at maxReplicas: a call waits until a running call ends, then gets exactly one
   agent.
3. A dispatch whose caller hangs up while it waits gets no agent; one that no worker can take
   within maxWait is given up with a DispatchAbandoned Event.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from typing import Any

import pytest
from livekit import api

from agentworker_operator.redact import room_ref
from tests.e2e.conftest import Kubectl
from tests.e2e.operator.calls import ENTRYPOINT, Calls
from tests.e2e.operator.conftest import OperatorProcess, agent_name, example
from tests.e2e.operator.test_agentworker import apply
from tests.e2e.operator.test_autoscaling import (
    assert_every_call_completed,
    events,
    live_pods,
    wait_calls_started,
    wait_status,
)
from tests.e2e.operator.test_recovery import agents_in
from tests.rig import env as rig_env
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]


@pytest.fixture
def operator_args(request: pytest.FixtureRequest, rig: rig_env.RigEnv) -> tuple[str, ...]:
    """The default 5 s period: the guard's own rounds are what is under test. The test of a
    fleet at zero takes the rig LiveKit server's webhooks too."""
    if "at_zero" not in request.node.name:
        return ()
    assert rig.livekit_webhook_port, "the rig's LiveKit server sends no webhooks: make rig"
    return ("--webhook-host=127.0.0.1", f"--webhook-port={rig.livekit_webhook_port}")


def guarded_fleet(
    rig: rig_env.RigEnv, namespace: str, *, low: int, high: int, per_worker: int, **guard: Any
) -> dict[str, Any]:
    """The call agent with the dispatch guard on; each call takes 1/per_worker of the load."""
    manifest: dict[str, Any] = example(
        rig,
        agentName=agent_name(namespace),
        entrypoint=ENTRYPOINT,
        numIdleProcesses=1,
        replicas=max(low, 1),
        env=[{"name": "E2E_CALLS_PER_WORKER", "value": str(per_worker)}],
        dispatchGuard={"enabled": True, **guard},
    )
    manifest["spec"]["autoscaling"] = {
        "enabled": True,
        "minReplicas": low,
        "maxReplicas": high,
        "targetLoad": 0.5,
        "scaleToZeroAfter": "15s",
        "scaleDown": {"stabilizationWindow": "3s", "stepPods": 4, "period": "5s"},
    }
    return manifest


def dispatch_jobs(rig: rig_env.RigEnv, room: str, agent: str) -> list[int]:
    """The number of jobs of each of the agent's dispatch records in the room."""

    async def count() -> list[int]:
        async with api.LiveKitAPI(
            rig.livekit_url, rig.livekit_api_key, rig.livekit_api_secret
        ) as lk:
            found = await lk.agent_dispatch.list_dispatch(room_name=room)
            return [len(d.state.jobs) for d in found if d.agent_name == agent]

    return asyncio.run(count())


def dropped(rig: rig_env.RigEnv, room: str) -> bool:
    """The LiveKit server logged that it dropped a dispatch into the room: no worker of the
    agent was registered."""
    log = (rig.logs_dir / "livekit.log").read_text(errors="replace")
    return any(
        "not dispatching agent job since no worker is available" in line and room in line
        for line in log.splitlines()
    )


def scaled_up_for_dispatches(operator: OperatorProcess) -> float:
    """When (wall clock) the operator first scaled up for waiting dispatches, by its log."""
    for line in operator.logs().splitlines():
        if '"DispatchesWaiting"' in line and '"scaling"' in line:
            stamp = json.loads(line)["time"]
            return datetime.datetime.fromisoformat(stamp).timestamp()
    raise AssertionError("no scale-up for waiting dispatches in the operator's log")


def operator_lines(operator: OperatorProcess, since: float, until: float) -> str:
    """The operator's own log lines (not kopf's) between two wall-clock times: what it did
    from a dispatch to its scale-up, for a failure's message."""
    found = []
    for line in operator.logs().splitlines():
        try:
            entry = json.loads(line)
            stamp = datetime.datetime.fromisoformat(entry["time"]).timestamp()
        except (ValueError, KeyError):
            continue
        if since <= stamp <= until and str(entry.get("logger", "")).startswith("agentworker"):
            found.append(line[:400])
    return "\n".join(found[-60:])


def counted(operator: OperatorProcess, metric: str, label: str) -> dict[str, float]:
    """A counter of the operator's, summed by the value of one label."""
    found: dict[str, float] = {}
    for line in operator.metrics().splitlines():
        if line.startswith(f"{metric}{{"):
            value = line.split(f'{label}="', 1)[1].split('"', 1)[0]
            found[value] = found.get(value, 0.0) + float(line.split()[-1])
    return found


def rescued(operator: OperatorProcess) -> dict[str, float]:
    """agentworker_dispatches_rescued_total by reason."""
    return counted(operator, "agentworker_dispatches_rescued_total", "reason")


def joined_after(phone: Calls, room: str, since: float) -> list[float]:
    """Seconds from `since` to each agent's arrival in a watched room."""
    return [t - since for t, what, _ in phone.timeline(room) if what == "joined"]


def test_the_first_call_to_a_fleet_at_zero_wakes_it_is_answered_and_the_fleet_returns_to_zero(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess, phone: Calls,
) -> None:  # fmt: skip
    agent = agent_name(namespace)
    apply(kubectl, namespace, guarded_fleet(rig, namespace, low=0, high=2, per_worker=4))
    wait_status(
        kubectl, namespace, "the idle fleet at zero",
        lambda s: s.get("desiredReplicas") == 0 and s.get("replicas") == 0, timeout_s=120,
    )  # fmt: skip
    assert events(kubectl, namespace, "ScaledDown"), "it went to zero by a scale-down"
    wait_for("no worker pod left", lambda: live_pods(kubectl, namespace), lambda p: not p)

    dispatched, dispatched_wall = time.monotonic(), time.time()
    (room,) = phone.start_watched(1, hold_s=10)
    # the held dispatch's status can last under a second (a worker starts in about one here):
    # the scale-up it caused is what stays
    wait_for(
        "a worker wanted for the dropped dispatch",
        lambda: events(kubectl, namespace, "ScaledUp"),
        lambda found: any("dispatches wait for a worker" in m for m in found),
    )
    # the caller's webhook woke the guard: the fleet was scaling up before the next 5 s round
    woke_s = scaled_up_for_dispatches(operator) - dispatched_wall
    delivered = counted(operator, "agentworker_webhooks_total", "outcome").get("delivered", 0)
    assert delivered > 0, "the rig's webhooks, signed by the real server, reach the operator"
    # the server did drop it: no worker was registered
    wait_for("the server's drop", lambda: dropped(rig, room), bool, timeout_s=30)
    started = wait_calls_started(phone, [room], timeout_s=90)
    answered_s = started[room]["t"] - dispatched_wall
    agents = wait_for(
        "the agent in the room", lambda: agents_in(rig, [room])[room], bool, timeout_s=30
    )
    assert len(agents) == 1, agents
    joined = wait_for(
        "the caller saw the agent", lambda: joined_after(phone, room, dispatched), bool
    )
    # the jobless record was replaced; the server lists a new one's job once all of its launches
    # are done (its participant job type waits up to 5 s for a worker of that type)
    wait_for("one record, with the job", lambda: dispatch_jobs(rig, room, agent), [1].__eq__)
    reissued = events(kubectl, namespace, "DispatchesReissued")
    assert any(room_ref(room) in m for m in reissued), reissued
    assert not any(room in m for m in reissued), "a room's name is the caller's data"
    assert rescued(operator).get("no_worker") == 1.0, operator.metrics()
    print(
        f"from zero: held and scaling up {woke_s:.1f}s, the job's start {answered_s:.1f}s, "
        f"the agent seen {joined[0]:.1f}s"
    )
    timeline = operator_lines(operator, dispatched_wall - 1, dispatched_wall + woke_s + 1)
    assert woke_s < 2.0, f"a webhook started the round (the period is 5 s):\n{timeline}"

    assert_every_call_completed(phone, [room], timeout_s=60, real=False)
    assert len(joined_after(phone, room, dispatched)) == 1, phone.timeline(room)
    phone.hang_up(room)
    wait_status(
        kubectl, namespace, "back to zero after the call",
        lambda s: s.get("desiredReplicas") == 0 and not s.get("pendingDispatches"),
        timeout_s=120,
    )  # fmt: skip


def one_full_worker(
    kubectl: Kubectl, namespace: str, phone: Calls, manifest: dict[str, Any], *,
    calls: int, hold_s: float,
) -> list[str]:  # fmt: skip
    """The fleet's one worker, full with `calls` calls (each its whole share: per_worker)."""
    apply(kubectl, namespace, manifest)
    wait_status(kubectl, namespace, "one ready worker", lambda s: s.get("available") == 1)
    busy: list[str] = []
    for _ in range(calls):  # one at a time: a worker takes one job before its first reading
        busy += phone.start(1, hold_s=hold_s)
        wait_calls_started(phone, busy)
    wait_status(kubectl, namespace, "the worker full", lambda s: s.get("full") == 1)
    return busy


def test_a_call_to_a_full_fleet_at_max_replicas_waits_for_a_slot_and_gets_one_agent(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess, phone: Calls,
) -> None:  # fmt: skip
    agent = agent_name(namespace)
    manifest = guarded_fleet(rig, namespace, low=1, high=1, per_worker=2)
    busy = one_full_worker(kubectl, namespace, phone, manifest, calls=2, hold_s=25)

    (room,) = phone.start_watched(1, hold_s=5)
    waiting_since = time.monotonic()
    wait_status(kubectl, namespace, "the dispatch held", lambda s: s.get("pendingDispatches") == 1)
    assert agents_in(rig, [room]) == {room: set()}, "the full worker took no job"
    assert dispatch_jobs(rig, room, agent) == [0], "the server dropped the dispatch"
    assert room not in phone.ledger.started()

    wait_calls_started(phone, [room], timeout_s=90)
    assert_every_call_completed(phone, busy, timeout_s=60, real=False)
    waited = wait_for(
        "the caller saw the agent", lambda: joined_after(phone, room, waiting_since), bool
    )[0]
    assert waited > 5, "it waited for a call to end"
    assert_every_call_completed(phone, [room], timeout_s=60, real=False)
    arrivals = [who for _, what, who in phone.timeline(room) if what == "joined"]
    assert len(arrivals) == 1, phone.timeline(room)
    assert rescued(operator).get("full") == 1.0, operator.metrics()
    phone.hang_up(room)


def test_a_dispatch_whose_caller_left_gets_no_agent_and_one_no_worker_takes_is_given_up(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess, phone: Calls,
) -> None:  # fmt: skip
    manifest = guarded_fleet(rig, namespace, low=1, high=1, per_worker=1, maxWait="15s")
    busy = one_full_worker(kubectl, namespace, phone, manifest, calls=1, hold_s=90)

    left, abandoned = phone.start_watched(2, hold_s=5)
    wait_status(kubectl, namespace, "both held", lambda s: s.get("pendingDispatches") == 2)
    phone.hang_up(left)
    wait_status(kubectl, namespace, "one left", lambda s: s.get("pendingDispatches") == 1)
    message = wait_for(
        "the other given up after maxWait",
        lambda: events(kubectl, namespace, "DispatchAbandoned"),
        lambda found: any(room_ref(abandoned) in m for m in found),
        timeout_s=60,
    )
    assert len([m for m in message if room_ref(abandoned) in m]) == 1, message
    assert not any(room_ref(left) in m for m in message), "a caller who left is no abandoned call"
    wait_status(kubectl, namespace, "none held", lambda s: not s.get("pendingDispatches"))
    # the busy call ends: a worker is free, and neither room gets an agent from it
    assert_every_call_completed(phone, busy, timeout_s=120, real=False)
    wait_status(kubectl, namespace, "the worker free", lambda s: s.get("available") == 1)
    time.sleep(8)  # past a grace and a guard round: what would have come has come
    assert [e for e in phone.timeline(abandoned) if e[1] == "joined"] == []
    assert agents_in(rig, [abandoned]) == {abandoned: set()}
    phone.hang_up(abandoned)
