"""A SIGTERM to the worker's whole process group (systemd, `kill -- -PGID`) is a normal drain."""

from __future__ import annotations

import json
import os
import signal

import psutil
import pytest

from tests.e2e.runtime.harness import LiveKit, WorkerFactory, eventually, process_ended

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

AGENTS = "tests.e2e.runtime.agents"


async def test_group_sigterm_still_kills_a_hung_job_after_its_shutdown_timeout(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(
        f"{AGENTS}:opts",
        livekit,
        agent_name=agent_name,
        env={"AGENT_DRAIN_TIMEOUT_S": "1", "AGENT_SHUTDOWN_PROCESS_TIMEOUT_S": "2"},
    )
    await livekit.dispatch(agent_name, f"group-{agent_name}", json.dumps({"block_s": 60}))
    [run] = await worker.wait_for("e2e job running")
    job = psutil.Process(int(str(run["job_pid"])))

    os.killpg(worker.popen.pid, signal.SIGTERM)  # the fork server gets it too

    [failed] = await worker.wait_for("job failed", job_id=run["job_id"], within_s=20)
    assert failed["reason"] == "shutdown_timeout"
    assert await worker.wait_exit(within_s=20) == 0

    async def job_gone() -> bool:
        return process_ended(job)

    await eventually(job_gone, within_s=10, what="the hung job process killed")
