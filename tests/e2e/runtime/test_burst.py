"""A burst of dispatches at once: the runtime never drops a job, it queues process starts."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.e2e.runtime.harness import LiveKit, WorkerFactory, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

AGENTS = "tests.e2e.runtime.agents"
BURST = 40
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
