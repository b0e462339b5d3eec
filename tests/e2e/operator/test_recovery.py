"""Call recovery on the rig: a worker dies with calls, and the rooms that still have a caller get
an agent back, once; rooms whose caller left get none.

The worker's whole process group is SIGKILLed (as an OOM kill of the container would), so its
calls die with it and the process runner restarts the container. The callers stay in their
rooms and watch the agents come and go.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import psutil
import pytest
from livekit import api
from livekit.protocol import models

from agentworker_operator.redact import room_ref
from tests.e2e.conftest import Kubectl
from tests.e2e.operator.calls import ENTRYPOINT, Calls
from tests.e2e.operator.conftest import OperatorProcess, agent_name, example
from tests.e2e.operator.test_agentworker import NAME, apply, wait_ready
from tests.e2e.operator.test_autoscaling import (
    FAST,
    assert_every_call_completed,
    events,
    live_pods,
    sync_rounds,
    wait_calls_started,
    wait_status,
    wait_sync_rounds,
    worker_pid,
)
from tests.rig import env as rig_env
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

RECOVERY_TARGET_S = 10.0


@pytest.fixture
def operator_args() -> tuple[str, ...]:
    return FAST


def agents_in(rig: rig_env.RigEnv, rooms: list[str]) -> dict[str, set[str]]:
    """The agent participants of each room, as the LiveKit server lists them."""

    async def listed() -> dict[str, set[str]]:
        async with api.LiveKitAPI(
            rig.livekit_url, rig.livekit_api_key, rig.livekit_api_secret
        ) as lk:
            found: dict[str, set[str]] = {}
            for room in rooms:
                answer = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
                found[room] = {
                    p.identity
                    for p in answer.participants
                    if p.kind == models.ParticipantInfo.AGENT
                }
            return found

    return asyncio.run(listed())


def dispatches(rig: rig_env.RigEnv, room: str, agent: str) -> int:
    """Dispatches of this test's agent into the room (the room's own automatic one aside)."""

    async def count() -> int:
        async with api.LiveKitAPI(
            rig.livekit_url, rig.livekit_api_key, rig.livekit_api_secret
        ) as lk:
            found = await lk.agent_dispatch.list_dispatch(room_name=room)
            return sum(1 for d in found if d.agent_name == agent)

    return asyncio.run(count())


def recovering_worker(kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, *, idle: int) -> str:
    """One ready worker of the call agent with call recovery on; its agent name."""
    agent = agent_name(namespace)
    manifest: dict[str, Any] = example(
        rig,
        agentName=agent,
        entrypoint=ENTRYPOINT,
        numIdleProcesses=idle,
        replicas=1,
        recovery={"redispatch": True},
        env=[{"name": "E2E_CALLS_PER_WORKER", "value": "20"}],
    )
    apply(kubectl, namespace, manifest)
    wait_ready(kubectl, namespace, replicas=1)
    return agent


def test_rooms_of_a_killed_worker_that_still_have_a_caller_get_an_agent_back_once(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess, phone: Calls,
) -> None:  # fmt: skip
    agent = recovering_worker(kubectl, rig, namespace, idle=2)
    rooms = phone.start_watched(7, hold_s=300)
    wait_calls_started(phone, rooms)
    wait_status(kubectl, namespace, "7 calls observed", lambda s: s.get("activeJobs") == 7)
    ((doomed, pod),) = live_pods(kubectl, namespace).items()
    kubectl("scale", f"aw/{NAME}", "-n", namespace, "--replicas=2")
    wait_ready(kubectl, namespace, replicas=2)
    kept, abandoned = rooms[:5], rooms[5:]
    for room in abandoned:
        phone.hang_up(room)  # these agents stay alone in their rooms until the worker dies
    wait_status(kubectl, namespace, "still 7 calls", lambda s: s.get("activeJobs") == 7)
    before = wait_for(
        "an agent in each kept room",
        lambda: agents_in(rig, kept),
        lambda found: all(found.values()),
        timeout_s=30,
    )
    os.killpg(os.getpgid(worker_pid(pod["status"]["podIP"])), signal.SIGKILL)
    killed_at = time.monotonic()
    back: dict[str, float] = {}

    def new_agents() -> dict[str, float]:
        now = time.monotonic()
        for room, agents in agents_in(rig, kept).items():
            if agents - before[room]:  # an agent other than the one that died
                back.setdefault(room, now - killed_at)
        return back

    wait_for(
        "an agent back in each room that still has its caller",
        new_agents,
        lambda found: set(found) == set(kept),
        timeout_s=60,
    )
    assert max(back.values()) < RECOVERY_TARGET_S, f"agents back after {back} s"
    messages = wait_for(
        "a CallRedispatched Event per recovered room",
        lambda: events(kubectl, namespace, "CallRedispatched"),
        lambda found: len(found) >= len(kept),
        timeout_s=30,
    )
    assert all(doomed in m for m in messages)
    assert sorted(room for room in kept for m in messages if room_ref(room) in m) == sorted(kept)
    assert not any(room in m for room in kept for m in messages), "a room's name is the caller's"
    log = wait_for(
        "the operator saw the abandoned rooms",
        operator.logs,
        lambda text: all(room_ref(room) in text for room in abandoned),
        timeout_s=30,
    )
    assert not any(room in log for room in [*kept, *abandoned]), "a room's name reached the log"
    assert log.count("call not recovered: no caller in the room") >= len(abandoned)
    for room in abandoned:
        assert dispatches(rig, room, agent) == 1, f"{room}: no caller, no second dispatch"
    wait_sync_rounds(operator, 3)  # the operator looked again: still once per room
    for room in kept:
        assert dispatches(rig, room, agent) == 2, f"{room}: dispatched again exactly once"
    assert len(events(kubectl, namespace, "CallRedispatched")) == len(kept)
    logged = f'agentworker_calls_redispatched_total{{name="{NAME}",namespace="{namespace}"}} 5.0'
    assert logged in operator.metrics()


def test_a_stalled_worker_keeps_its_calls_with_recovery_on(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess, phone: Calls,
) -> None:  # fmt: skip
    # found on the rig: 6 s of SIGSTOP (a GC pause, CPU throttling) had its 3 live agents
    # removed from their rooms and dispatched anew
    agent = recovering_worker(kubectl, rig, namespace, idle=3)
    rooms = phone.start(3, hold_s=40, real=3, prefix="stall")
    wait_calls_started(phone, rooms)
    wait_status(kubectl, namespace, "3 calls observed", lambda s: s.get("activeJobs") == 3)
    # a call's ledger line comes before its agent joins the room
    before = wait_for(
        "an agent in each room",
        lambda: agents_in(rig, rooms),
        lambda found: all(len(agents) == 1 for agents in found.values()),
        timeout_s=30,
    )
    ((_, pod),) = live_pods(kubectl, namespace).items()
    worker = psutil.Process(worker_pid(pod["status"]["podIP"]))
    worker.send_signal(signal.SIGSTOP)  # the worker process only: its job processes go on
    try:
        wait_status(
            kubectl, namespace, "the stalled worker seen as unknown",
            lambda s: s.get("unknownWorkers") == [pod["metadata"]["name"]],
        )  # fmt: skip
        stalled_rounds = sync_rounds(operator)
        wait_sync_rounds(operator, 5)  # 5 rounds of 1 s: the old rule redispatched in one
    finally:
        worker.send_signal(signal.SIGCONT)
    assert sync_rounds(operator) - stalled_rounds >= 5
    wait_status(kubectl, namespace, "the worker answers again", lambda s: s.get("activeJobs") == 3)
    wait_sync_rounds(operator, 3)
    assert agents_in(rig, rooms) == before, "an agent was replaced"
    assert events(kubectl, namespace, "CallRedispatched") == []
    for room in rooms:
        assert dispatches(rig, room, agent) == 1, f"{room}: dispatched again"
    assert_every_call_completed(phone, rooms, timeout_s=90)
