"""Start-up and bad input end to end: clear exit messages, termination, dev mode signals."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import uuid

import pytest
from livekit import api

from tests.e2e.runtime.harness import AGENT_WORKER, LiveKit, WorkerFactory, WorkerProc, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

AGENTS = "tests.e2e.runtime.agents"


def error_of(worker: WorkerProc, message: str) -> str:
    [record] = worker.find(message)
    assert record["severity"] == "ERROR"
    return str(record["error"])


async def test_wrong_api_secret_exits_one_with_a_clear_message(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    wrong = LiveKit(url=livekit.url, api_key=livekit.api_key, api_secret="not-the-secret-" * 3)
    worker = await workers.start(f"{AGENTS}:opts", wrong, agent_name=agent_name, ready=False)
    assert await worker.wait_exit(within_s=30) == 1
    error = error_of(worker, "giving up on LiveKit")
    assert "refused the API key and secret" in error
    assert "not-the-secret" not in worker.log_path.read_text(), "the secret reached the log"


async def test_unreachable_livekit_exits_one_after_max_retry(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    nowhere = LiveKit(url=f"ws://127.0.0.1:{free_port()}", api_key="k", api_secret="s" * 32)
    worker = await workers.start(
        f"{AGENTS}:opts", nowhere, agent_name=agent_name, ready=False, env={"AGENT_MAX_RETRY": "2"}
    )
    assert await worker.wait_exit(within_s=30) == 1
    assert len(worker.find("connection to LiveKit failed, retrying")) == 2
    assert "after 3 attempts" in error_of(worker, "giving up on LiveKit")


async def test_port_in_use_exits_one_naming_the_address(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = await workers.start(
            f"{AGENTS}:opts",
            livekit,
            agent_name=agent_name,
            ready=False,
            env={"AGENT_PORT": str(port)},
        )
        assert await worker.wait_exit(within_s=30) == 1
    assert f"127.0.0.1:{port}" in error_of(worker, "cannot start the HTTP server")


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("AGENT_LOAD_THRESHOLD", "high"),
        ("AGENT_WORKER_TYPE", "CITY"),
        ("AGENT_PERMISSIONS", "{"),
        ("AGENT_LOG_LEVEL", "LOUD"),
    ],
)
async def test_malformed_variable_exits_two_naming_it(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str, var: str, value: str
) -> None:
    worker = await workers.start(
        f"{AGENTS}:opts", livekit, agent_name=agent_name, ready=False, env={var: value}
    )
    assert await worker.wait_exit(within_s=30) == 2
    assert error_of(worker, "invalid options").startswith(var)


async def test_server_termination_ends_the_job_and_runs_its_shutdown_callbacks(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(f"{AGENTS}:opts", livekit, agent_name=agent_name)
    room = f"room-{uuid.uuid4().hex[:8]}"
    dispatch = await livekit.dispatch(agent_name, room, json.dumps({"sleep_s": 60}))
    [run] = await worker.wait_for("e2e job running", room=room)
    async with api.LiveKitAPI(livekit.url, livekit.api_key, livekit.api_secret) as lk:
        await asyncio.wait_for(lk.agent_dispatch.delete_dispatch(dispatch.id, room), 10)
    await worker.wait_for("server asked to end a job", job_id=run["job_id"])
    [callback] = await worker.wait_for("e2e shutdown callback", job_id=run["job_id"])
    assert callback["reason"] == "terminated by the server"
    await worker.wait_for("job succeeded", job_id=run["job_id"])


async def test_dev_mode_second_sigint_exits_at_once(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(
        "",
        livekit,
        agent_name=agent_name,
        ready=False,
        command=[str(AGENT_WORKER), "dev", f"{AGENTS}:opts"],
    )
    await worker.wait_ready()
    await livekit.dispatch(agent_name, f"room-{uuid.uuid4().hex[:8]}", json.dumps({"sleep_s": 60}))
    await worker.wait_for_text("e2e job running")
    worker.signal(signal.SIGINT)
    await worker.wait_for_text("draining")
    worker.signal(signal.SIGINT)
    assert await worker.wait_exit(within_s=10) == 1
    assert "second SIGINT in dev mode" in worker.log_path.read_text()
