"""A fork server that dies (SIGKILL, the OOM killer) takes no running job with it.

Job processes are forked by multiprocessing's fork server; the worker must follow them by their
own pids, notice the fork server's death, start a new one for new jobs, and still be able to end
(and kill) the jobs that were running.
"""

from __future__ import annotations

import json
import signal
import uuid

import psutil
import pytest

from tests.e2e.runtime.harness import LiveKit, WorkerFactory, eventually, process_ended

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

AGENTS = "tests.e2e.runtime.agents"


def room_name() -> str:
    return f"room-{uuid.uuid4().hex[:8]}"


async def kill_and_wait(proc: psutil.Process) -> None:
    proc.send_signal(signal.SIGKILL)

    async def gone() -> bool:
        return process_ended(proc)

    await eventually(gone, within_s=10, what="the fork server gone")


async def test_killed_fork_server_leaves_the_running_job_alone_and_is_replaced(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(f"{AGENTS}:opts", livekit, agent_name=agent_name, idle=1)
    await livekit.dispatch(agent_name, room_name(), json.dumps({"sleep_s": 6}))
    [run] = await worker.wait_for("e2e job running")
    job_id = run["job_id"]
    fork_server = await worker.fork_server()

    await kill_and_wait(fork_server)

    await worker.wait_for("the fork server died; running jobs go on, new ones get a new one")
    assert (await worker.document())["active_jobs"] == 1, "the running job looked ended"
    await worker.wait_for("job succeeded", job_id=job_id, within_s=20)
    assert worker.find("e2e job done", job_id=job_id)
    later = room_name()
    await livekit.dispatch(agent_name, later)
    await worker.wait_for("e2e job running", room=later)
    assert (await worker.fork_server()).pid != fork_server.pid
    assert len(worker.find("the fork server died; running jobs go on, new ones get a new one")) == 1


async def test_hung_job_is_still_killed_at_shutdown_after_the_fork_server_died(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(
        f"{AGENTS}:opts",
        livekit,
        agent_name=agent_name,
        env={"AGENT_DRAIN_TIMEOUT_S": "1", "AGENT_SHUTDOWN_PROCESS_TIMEOUT_S": "2"},
    )
    await livekit.dispatch(agent_name, room_name(), json.dumps({"block_s": 60}))
    [run] = await worker.wait_for("e2e job running")
    job = psutil.Process(int(str(run["job_pid"])))
    await kill_and_wait(await worker.fork_server())

    worker.signal(signal.SIGTERM)

    [failed] = await worker.wait_for("job failed", job_id=run["job_id"], within_s=20)
    assert failed["reason"] == "shutdown_timeout"
    assert await worker.wait_exit(within_s=20) == 0

    async def job_gone() -> bool:
        return process_ended(job)

    await eventually(job_gone, within_s=5, what="the hung job process killed")
