"""Agent files written as LiveKit's current docs write them (examples/server), run as in a pod.

Each uses `AgentServer` and `@server.rtc_session(...)` with `from worker_runtime import ...` as
its only change; the harness sets AGENT_NAME, which wins over the name in code.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path

import pytest
from livekit import rtc

from tests.e2e.runtime.harness import LiveKit, WorkerFactory, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

NO_CPU_LIMIT = {"AGENT_LOAD_THRESHOLD": "inf"}  # the shared CI machine's CPU must not matter


def room_name() -> str:
    return f"room-{uuid.uuid4().hex[:8]}"


async def join(livekit: LiveKit, identity: str, room: str) -> rtc.Room:
    user = rtc.Room()
    await asyncio.wait_for(user.connect(livekit.url, livekit.token(identity, room)), 20)
    return user


async def test_entrypoint_example_run_as_a_script_hears_the_user_and_says_hello(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    room = room_name()
    user = await join(livekit, "user", room)
    texts: list[str] = []
    reading: set[asyncio.Task[None]] = set()  # each ends with its stream, or with the room

    def on_text(reader: rtc.TextStreamReader, sender: str) -> None:
        async def read() -> None:
            texts.append(await reader.read_all())

        reading.add(asyncio.get_running_loop().create_task(read()))

    user.register_text_stream_handler("hello-world", on_text)
    try:
        source = rtc.AudioSource(48000, 1)
        track = rtc.LocalAudioTrack.create_audio_track("mic", source)
        await asyncio.wait_for(user.local_participant.publish_track(track), 20)
        worker = await workers.start(
            "",
            livekit,
            agent_name=agent_name,
            env=NO_CPU_LIMIT,
            ready=False,
            command=[sys.executable, "-m", "examples.server.entrypoint", "start"],
        )
        await worker.wait_ready()
        await livekit.dispatch(agent_name, room)
        await worker.wait_for("participant in room", identity="user", within_s=30)
        await worker.wait_for("audio track subscribed", within_s=30)

        async def hello() -> bool:
            return "hello world" in texts

        await eventually(hello, within_s=20, what="the agent's hello", last=lambda: texts)
    finally:
        await user.disconnect()
        for task in reading:
            task.cancel()
        await asyncio.gather(*reading, return_exceptions=True)


async def test_request_handler_example_joins_with_its_name_identity_and_attributes(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    room = room_name()
    user = await join(livekit, "user", room)
    try:
        target = "examples.server.request_handler:server"
        worker = await workers.start(target, livekit, agent_name=agent_name, env=NO_CPU_LIMIT)
        await livekit.dispatch(agent_name, room)
        [joined] = await worker.wait_for("joined as", within_s=30)
        identity = f"greeter-{joined['job_id']}"
        assert joined["identity"] == identity

        async def agent_seen() -> rtc.RemoteParticipant | None:
            return user.remote_participants.get(identity)

        agent = await eventually(
            agent_seen, within_s=20, what=identity, last=lambda: list(user.remote_participants)
        )
        assert (agent.name, agent.attributes.get("myagent")) == ("agent", "rocks")
    finally:
        await user.disconnect()


async def test_prewarm_example_named_by_its_function_runs_its_setup_fnc(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    """`module:my_agent` names the decorated function: its server's setup_fnc must still run."""
    worker = await workers.start(
        "examples.server.prewarm:my_agent", livekit, agent_name=agent_name, idle=2, env=NO_CPU_LIMIT
    )
    await livekit.dispatch(agent_name, room_name())
    [record] = await worker.wait_for("using the prewarmed model")
    assert record["loaded_by_pid"] == record["job_pid"]
    await worker.wait_for("job succeeded", job_id=record["job_id"])


async def test_load_example_reports_its_jobs_as_its_load(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start("examples.server.load:server", livekit, agent_name=agent_name)
    doc = await worker.document()
    assert (doc["worker_load"], doc["load_threshold"], doc["state"]) == (0.0, 0.9, "available")
    await livekit.dispatch(agent_name, room_name(), "30")  # a job of 30 s
    await worker.wait_for("job running")
    loads: list[object] = []

    async def one_tenth() -> bool:
        loads.append((await worker.document())["worker_load"])
        return loads[-1] == pytest.approx(0.1)

    await eventually(one_tenth, within_s=10, what="load 0.1 (1 job of 10)", last=lambda: loads[-3:])


async def test_permissions_example_is_granted_what_its_server_asks(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(
        "examples.server.permissions:server", livekit, agent_name=agent_name, env=NO_CPU_LIMIT
    )
    await livekit.dispatch(agent_name, room_name())  # AGENT_NAME won over "note-taker"
    [granted] = await worker.wait_for("granted", within_s=30)
    assert granted["agent_name"] == agent_name
    assert (granted["can_publish"], granted["can_subscribe"], granted["can_publish_data"]) == (
        False,
        True,
        True,
    )
    [finished] = await worker.wait_for("job finished", job_id=granted["job_id"])
    assert finished["reason"] == "notes taken"


async def test_session_end_example_reports_before_its_shutdown_hook(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(
        "examples.server.session_end:server", livekit, agent_name=agent_name, env=NO_CPU_LIMIT
    )
    await livekit.dispatch(agent_name, room_name(), json.dumps({"user": "ada"}))
    [saved] = await worker.wait_for("saving user state")
    assert saved["user"] == "ada"
    job_id = saved["job_id"]
    await worker.wait_for("job succeeded", job_id=job_id)
    order = [
        r["message"]
        for r in worker.records()
        if r.get("job_id") == job_id and r["message"] in ("session report", "saving user state")
    ]
    assert order == ["session report", "saving user state"]
    [finished] = worker.find("job finished", job_id=job_id)
    assert finished["reason"] == "Session ended"


async def test_server_options_preload_log_level_and_active_jobs(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str, tmp_path: Path
) -> None:
    """preload_modules reach the fork server alone, log_level in code applies, and the request
    handler sees the worker's jobs through `server.active_jobs`."""
    mark = tmp_path / "preloaded-by"
    env = {**NO_CPU_LIMIT, "E2E_PRELOAD_MARK": str(mark)}
    worker = await workers.start(
        "tests.e2e.runtime.server_agents:server", livekit, agent_name=agent_name, env=env
    )
    assert worker.find("job process ready"), "log_level='DEBUG' in code did not apply"
    fork_server = await worker.fork_server()
    await livekit.dispatch(agent_name, room_name())
    [first] = await worker.wait_for("e2e server job")
    assert first["preloaded"] is True
    assert mark.read_text().split() == [str(fork_server.pid)]  # imported once, not per job
    await livekit.dispatch(agent_name, room_name())
    [offered, second] = await worker.wait_for("e2e job offered", count=2)
    assert (offered["active_jobs"], second["active_jobs"]) == (0, 1)
    await worker.wait_for("request_fnc rejected the job", job_id=second["job_id"])
