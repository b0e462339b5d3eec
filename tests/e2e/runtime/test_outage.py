"""LiveKit outages end to end: calls outlive the control connection, job reports wait for it,
and a shutdown never registers a closing worker.

Each test runs a livekit-server of its own (`dedicated_livekit`), which it stops, starts, or cuts
off behind a gate proxy, and reads that server's log for what the server saw.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid

import pytest

from tests.e2e.runtime.harness import DedicatedLiveKit, GateProxy, WorkerFactory, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

AGENTS = "tests.e2e.runtime.agents"


def room_name() -> str:
    return f"room-{uuid.uuid4().hex[:8]}"


def messages(records: list[dict[str, object]]) -> list[object]:
    return [r.get("message") for r in records]


GIVE_UP = [
    # down for good, longer than 2 retries
    ("max-retry", "2", "could not connect to LiveKit"),
    # back within the 5 retries, but the API key's secret was rotated: 401 on reconnect
    ("credentials-refused", "5", "refused the API key and secret"),
]


@pytest.mark.parametrize(
    ("cause", "max_retry", "error"), GIVE_UP, ids=[cause for cause, _, _ in GIVE_UP]
)
async def test_connection_given_up_drains_the_running_job_then_exits_one(
    dedicated_livekit: DedicatedLiveKit,
    workers: WorkerFactory,
    agent_name: str,
    cause: str,
    max_retry: str,
    error: str,
) -> None:
    lk = dedicated_livekit.livekit
    worker = await workers.start(
        f"{AGENTS}:opts", lk, agent_name=agent_name, env={"AGENT_MAX_RETRY": max_retry}
    )
    await lk.dispatch(agent_name, room_name(), json.dumps({"sleep_s": 12}))
    [run] = await worker.wait_for("e2e job running")

    await asyncio.to_thread(dedicated_livekit.stop)
    if cause == "credentials-refused":
        dedicated_livekit.rotate_secret()
        await asyncio.to_thread(dedicated_livekit.start)

    assert await worker.wait_exit(within_s=40) == 1
    job_id = run["job_id"]
    assert worker.find("e2e job done", job_id=job_id), "the job was cut off"
    assert worker.find("job succeeded", job_id=job_id)
    order = messages(worker.records())
    gave_up = order.index("LiveKit connection given up, draining the running jobs before exiting")
    assert gave_up < order.index("e2e job done") < order.index("giving up on LiveKit")
    assert error in str(worker.find("giving up on LiveKit")[0]["error"])
    assert "still no connection to LiveKit, retrying while the jobs drain" in order[gave_up:]


async def test_job_ended_while_livekit_was_down_is_reported_after_registering_again(
    dedicated_livekit: DedicatedLiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    lk = dedicated_livekit.livekit
    worker = await workers.start(f"{AGENTS}:opts", lk, agent_name=agent_name, idle=2)
    rooms = [room_name(), room_name()]
    for room, sleep_s in zip(rooms, (5, 6), strict=True):
        await lk.dispatch(agent_name, room, json.dumps({"sleep_s": sleep_s}))
    runs = [(await worker.wait_for("e2e job running", room=room))[0] for room in rooms]
    job_ids = [str(run["job_id"]) for run in runs]

    await asyncio.to_thread(dedicated_livekit.stop)
    await worker.wait_for("lost the connection to LiveKit")
    for job_id in job_ids:
        await worker.wait_for("job succeeded", job_id=job_id, within_s=20)
    order = messages(worker.records())
    assert order.index("lost the connection to LiveKit") < order.index("job succeeded")
    await asyncio.to_thread(dedicated_livekit.start)
    await worker.wait_ready(within_s=30)

    # The restarted server has forgotten the jobs, so it logs the late reports as updates for
    # unknown jobs (at debug level, without the status): what matters is that it received each
    # job's end, in the order the jobs ended (on a loaded machine the second may start, and end,
    # first). A job's "running" may come first: held too when the server went down before it
    # was sent (a CI run saw it), so each job's last report is its end.
    ended = [str(r["job_id"]) for r in worker.find("job succeeded") if r["job_id"] in job_ids]
    assert sorted(ended) == sorted(job_ids)

    def reports() -> list[str]:
        found = dedicated_livekit.find("received job update for unknown job")
        return [str(r["jobID"]) for r in found]

    async def ends_in_order() -> list[str] | None:
        got = reports()
        last_of = {job_id: at for at, job_id in enumerate(got)}
        return got if sorted(last_of, key=last_of.__getitem__) == ended else None

    got = await eventually(
        ends_in_order, within_s=15, what=f"the ends of {ended}, in order", last=reports
    )
    assert all(got.count(job_id) <= 2 for job_id in job_ids), got  # a running, then the end


async def test_sigterm_while_reconnecting_never_registers_and_exits_zero(
    dedicated_livekit: DedicatedLiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    async with GateProxy(dedicated_livekit.livekit) as proxy:
        worker = await workers.start(f"{AGENTS}:opts", proxy.livekit, agent_name=agent_name)
        proxy.shut()
        await worker.wait_for("lost the connection to LiveKit")

        async def reconnecting() -> bool:
            return proxy.held > 0

        await eventually(reconnecting, within_s=10, what="a reconnect held at the gate")
        worker.signal(signal.SIGTERM)
        await worker.wait_for("worker state changed", to="closed")
        proxy.open()  # the reconnect that was in progress now reaches the server
        assert await worker.wait_exit(within_s=20) == 0
    assert not worker.find("the worker failed")
    registered = dedicated_livekit.find("worker registered", agentName=agent_name)
    assert len(registered) == 1, "a closing worker registered again"
