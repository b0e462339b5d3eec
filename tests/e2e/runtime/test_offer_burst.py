"""A burst of offers at one worker: it takes what its load threshold allows and says no to the rest.

The worker's load_fnc is its running jobs over 2 slots and its threshold 0.75, so two jobs fit:
the first leaves the load at 0.5, where one more is still taken (the threshold itself accepts),
and two make it 1.0. Six dispatches are created at once. The worker's agent connection goes
through the fault proxy, which delivers every server frame half a second late: LiveKit has sent
all six offers before the worker answers the first, so every one of them reaches the worker, as
in a real burst (otherwise the worker's FULL status could keep later dispatches away from it, and
"only two taken" would prove nothing): the worker's log shows each offer arriving. How many jobs
it took, and that each no went out as `available=false`, is read from the server's log: for a
no it says "worker not available" and tries another worker (silence would have cost it its 10 s
timeout and the job, "agent worker availability timeout"); the worker's log gives the reason.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlparse

import pytest

from tests.e2e.runtime.harness import (
    DedicatedLiveKit,
    LiveKit,
    WorkerFactory,
    WorkerProc,
    eventually,
)
from tests.faultproxy import FaultProxy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

TARGET = "tests.e2e.runtime.slot_agents:slots"
BURST = 6
THRESHOLD = "0.75"
PREWARMED = 3
"""More prewarmed processes than jobs fit: livekit-agents' guess (a job costs load_threshold /
num_idle_processes) would take 3 of the burst; the worker waits for its first job's measured
cost instead."""
LATE_S = 0.5


@pytest.fixture
async def proxy(dedicated_livekit: DedicatedLiveKit) -> AsyncIterator[FaultProxy]:
    port = urlparse(dedicated_livekit.livekit.url).port
    assert port is not None
    async with FaultProxy("127.0.0.1", port, paths=("/agent",)) as proxy:
        yield proxy
    # A connection handler of FaultProxy leaves the set `__aexit__` waits for before its last
    # await: one whose client (the killed worker) just went away may end a loop turn later.
    await eventually(handlers_ended, within_s=5, what="the fault proxy's handlers to end")


async def handlers_ended() -> bool:
    return not any(
        getattr(task.get_coro(), "__qualname__", "") == "FaultProxy._on_client"
        for task in asyncio.all_tasks()
        if not task.done()
    )


@pytest.fixture
async def worker(
    dedicated_livekit: DedicatedLiveKit, proxy: FaultProxy, workers: WorkerFactory, agent_name: str
) -> WorkerProc:
    lk = dedicated_livekit.livekit
    through = LiveKit(url=proxy.url, api_key=lk.api_key, api_secret=lk.api_secret)
    return await workers.start(
        TARGET,
        through,
        agent_name=agent_name,
        idle=PREWARMED,
        env={"AGENT_LOAD_THRESHOLD": THRESHOLD},
    )


async def dispatch_burst(lk: LiveKit, agent_name: str, prefix: str) -> list[str]:
    """BURST dispatches created at once, each a job that sleeps 30 s; their rooms."""
    rooms = [f"{prefix}-{uuid.uuid4().hex[:6]}-{n}" for n in range(BURST)]
    meta = json.dumps({"sleep_s": 30})
    await asyncio.gather(*(lk.dispatch(agent_name, room, meta) for room in rooms))
    return rooms


async def offered_all(worker: WorkerProc, rooms: list[str]) -> None:
    """Until every offer of `rooms` reached the worker (its log says so for each)."""

    async def all_offered() -> bool:
        return {str(r["room"]) for r in worker.find("job offered")} >= set(rooms)

    await eventually(all_offered, within_s=30, what="every offer at the worker", last=worker.tail)


async def settled(
    server: DedicatedLiveKit, agent_name: str, rooms: list[str]
) -> tuple[set[str], dict[str, str]]:
    """Once the server assigned or gave up on the job of each room: the rooms assigned, and
    room -> the error of each job it gave up on."""

    def outcomes() -> tuple[set[str], dict[str, str]]:
        assigned = {
            str(r["room"]) for r in server.find("assigned job to worker", agentName=agent_name)
        }
        failed = server.find("failed to assign job to worker", agentName=agent_name)
        refused = {str(r["room"]): str(r.get("error")) for r in failed}
        return assigned & set(rooms), {k: v for k, v in refused.items() if k in rooms}

    async def all_settled() -> tuple[set[str], dict[str, str]] | None:
        assigned, refused = outcomes()
        return (assigned, refused) if len(assigned) + len(refused) >= len(rooms) else None

    return await eventually(all_settled, within_s=20, what="an outcome for each job", last=outcomes)


def declined(worker: WorkerProc, rooms: set[str]) -> dict[str, str]:
    """Room -> the reason the worker logged for each no."""
    return {
        str(r["room"]): str(r["reason"])
        for r in worker.find("declined a job offer")
        if r.get("room") in rooms
    }


async def test_six_offers_at_once_take_the_two_the_threshold_allows_and_refuse_four(
    dedicated_livekit: DedicatedLiveKit, proxy: FaultProxy, worker: WorkerProc, agent_name: str
) -> None:
    proxy.delay(LATE_S)

    rooms = await dispatch_burst(dedicated_livekit.livekit, agent_name, "burst")

    await offered_all(worker, rooms)
    assigned, refused = await settled(dedicated_livekit, agent_name, rooms)
    assert len(assigned) == 2, f"{len(assigned)} of {BURST} jobs taken: {sorted(assigned)}"
    assert set(refused.values()) == {"worker not available"}, refused  # available=false
    assert declined(worker, set(refused)) == dict.fromkeys(refused, "full")
    for room in assigned:
        await worker.wait_for("e2e job running", room=room)
    seen: list[object] = []

    async def full_with_two() -> bool:
        doc = await worker.document()
        seen.append((doc["state"], doc["active_jobs"], doc["worker_load"]))
        return seen[-1] == ("full", 2, 1.0)

    await eventually(
        full_with_two, within_s=5, what="/worker full with 2 jobs", last=lambda: seen[-1:]
    )


async def test_with_one_job_running_six_offers_at_once_take_one_more(
    dedicated_livekit: DedicatedLiveKit, proxy: FaultProxy, worker: WorkerProc, agent_name: str
) -> None:
    lk = dedicated_livekit.livekit
    first = f"first-{uuid.uuid4().hex[:6]}"
    await lk.dispatch(agent_name, first, json.dumps({"sleep_s": 30}))
    await worker.wait_for("e2e job running", room=first)

    async def measured() -> bool:
        return (await worker.document())["worker_load"] == 0.5

    await eventually(measured, within_s=10, what="the first job in the load")
    proxy.delay(LATE_S)

    rooms = await dispatch_burst(lk, agent_name, "more")

    await offered_all(worker, rooms)
    assigned, refused = await settled(dedicated_livekit, agent_name, rooms)
    assert len(assigned) == 1, f"{len(assigned)} of {BURST} more jobs taken: {sorted(assigned)}"
    assert set(refused.values()) == {"worker not available"}, refused
    assert declined(worker, set(refused)) == dict.fromkeys(refused, "full")
    [room] = assigned
    await worker.wait_for("e2e job running", room=room)
