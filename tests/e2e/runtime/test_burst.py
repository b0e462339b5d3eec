"""A burst of dispatches at once: the runtime never drops a job, it queues process starts.

Nor does a drain that begins while starts are queued: every accepted job runs or is reported
failed, and the victim handshake counts a job that waits for its process as held.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid

import pytest

from tests.e2e.runtime.harness import DedicatedLiveKit, LiveKit, WorkerFactory, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

AGENTS = "tests.e2e.runtime.agents"
BURST = 40
QUEUED = 8
REPORTS = ("job succeeded", "job failed", "could not start a process for the job")
"""Every way a job's end reaches the server (each one sends an UpdateJobStatus)."""


async def test_burst_of_dispatches_runs_every_entrypoint_and_reports_every_job(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(
        f"{AGENTS}:opts",
        livekit,
        agent_name=agent_name,
        idle=2,
        # 40 fresh interpreters at once take far longer than 3 s on a small machine; a process
        # start must be timed from its own start, not from when its job arrived
        env={"AGENT_LOAD_THRESHOLD": "inf", "AGENT_INITIALIZE_PROCESS_TIMEOUT_S": "3"},
    )
    prefix = f"burst-{uuid.uuid4().hex[:6]}"
    rooms = [f"{prefix}-{i}" for i in range(BURST)]
    await asyncio.gather(*(livekit.dispatch(agent_name, room) for room in rooms))

    def reported() -> list[dict[str, object]]:
        return [r for r in worker.records() if r.get("message") in REPORTS]

    async def all_reported() -> bool:
        return len(reported()) >= BURST

    await eventually(all_reported, within_s=150, what=f"{BURST} jobs reported", last=worker.tail)
    assert [r["message"] for r in reported()] == ["job succeeded"] * BURST, reported()[-1]
    runs = worker.find("e2e job running")
    assert sorted(str(r["room"]) for r in runs) == sorted(rooms)
    assert all(r["prewarmed_in"] == r["job_pid"] for r in runs), "prewarm ran before each job"


async def test_sigterm_while_starts_are_queued_runs_or_fails_every_accepted_job(
    dedicated_livekit: DedicatedLiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    lk = dedicated_livekit.livekit
    worker = await workers.start(
        f"{AGENTS}:slow_start",
        lk,
        agent_name=agent_name,
        idle=0,
        # one start at a time, 1.5 s each: the last of 8 jobs waits ~12 s for its process,
        # longer than an assignment takes
        env={"AGENT_LOAD_THRESHOLD": "inf", "NUM_CPUS": "1", "E2E_PREWARM_S": "1.5"},
    )
    rooms = [f"queued-{uuid.uuid4().hex[:6]}-{i}" for i in range(QUEUED)]
    meta = json.dumps({"sleep_s": 0.5})
    await asyncio.gather(*(lk.dispatch(agent_name, room, meta) for room in rooms))
    assigned = await dedicated_livekit.wait_for(
        "assigned job to worker", agentName=agent_name, count=QUEUED
    )

    worker.signal(signal.SIGTERM)

    assert await worker.wait_exit(within_s=60) == 0
    job_ids = {str(r["jobID"]) for r in assigned}
    for job_id in job_ids:
        ran = worker.find("e2e job running", job_id=job_id)
        failed = worker.find("could not start a process for the job", job_id=job_id)
        assert ran or failed, f"job {job_id} was accepted, then neither ran nor was reported"

    def unreported() -> set[str]:
        return job_ids - {str(r["jobID"]) for r in dedicated_livekit.find("job ended")}

    async def all_reported() -> bool:
        return not unreported()

    await eventually(all_reported, within_s=5, what="the server told of every job", last=unreported)


async def test_retire_is_refused_while_an_accepted_job_waits_for_its_process(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    token = uuid.uuid4().hex
    worker = await workers.start(
        f"{AGENTS}:slow_start",
        livekit,
        agent_name=agent_name,
        idle=0,
        env={"AGENT_CONTROL_TOKEN": token, "E2E_PREWARM_S": "4"},
    )
    await livekit.dispatch(agent_name, f"retire-{uuid.uuid4().hex[:6]}", json.dumps({"sleep_s": 1}))

    async def process_starting() -> bool:  # idle=0: the job's own process, in its prewarm
        return bool((await worker.fork_server()).children())

    await eventually(process_starting, within_s=20, what="the job's process starting")
    assert not worker.find("e2e job running")
    assert await worker.retire(f"Bearer {token}") == (409, {"retired": False, "reason": "busy"})
    [run] = await worker.wait_for("e2e job running")
    await worker.wait_for("job succeeded", job_id=run["job_id"])
    assert (await worker.retire(f"Bearer {token}"))[0] == 200
