"""The seeds' examples in examples/agents, run as they would be in a pod."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid

import pytest
from livekit import rtc

from tests.e2e.runtime.harness import LiveKit, WorkerFactory, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

NO_CPU_LIMIT = {"AGENT_LOAD_THRESHOLD": "inf"}  # the shared CI machine's CPU must not matter


def room_name() -> str:
    return f"room-{uuid.uuid4().hex[:8]}"


async def test_metadata_example_reads_the_dispatch_metadata(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(
        "examples.agents.metadata:entrypoint", livekit, agent_name=agent_name, env=NO_CPU_LIMIT
    )
    user = {"user_id": "u-42", "user_name": "Ada", "user_phone": "+100"}
    await livekit.dispatch(agent_name, room_name(), json.dumps(user))
    [record] = await worker.wait_for("job metadata")
    assert {k: record[k] for k in user} == user
    await worker.wait_for("job succeeded")


async def test_metadata_example_fails_cleanly_on_bad_metadata(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(
        "examples.agents.metadata:entrypoint", livekit, agent_name=agent_name, env=NO_CPU_LIMIT
    )
    await livekit.dispatch(agent_name, room_name(), "not json")
    [failed] = await worker.wait_for("job failed")
    assert str(failed["error"]).startswith("JSONDecodeError")
    assert await worker.status("/readyz") == 200


async def test_prewarm_example_uses_the_model_loaded_in_its_process(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(
        "examples.agents.prewarm:opts", livekit, agent_name=agent_name, idle=2, env=NO_CPU_LIMIT
    )
    await livekit.dispatch(agent_name, room_name())
    [record] = await worker.wait_for("using the prewarmed model")
    assert record["loaded_by_pid"] == record["job_pid"]


async def test_shutdown_hook_example_saves_state_after_shutdown(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(
        "examples.agents.shutdown_hook:entrypoint",
        livekit,
        agent_name=agent_name,
        env=NO_CPU_LIMIT,
    )
    await livekit.dispatch(agent_name, room_name())
    [saved] = await worker.wait_for("saving user state")
    [finished] = await worker.wait_for("job finished", job_id=saved["job_id"])
    assert finished["reason"] == "Session ended"
    await worker.wait_for("job succeeded", job_id=saved["job_id"])


async def test_request_handler_example_joins_with_its_identity_and_name(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(
        "examples.agents.request_handler:opts", livekit, agent_name=agent_name, env=NO_CPU_LIMIT
    )
    await livekit.dispatch(agent_name, room_name())
    [joined] = await worker.wait_for("joined as", within_s=30)
    assert joined["identity"] == f"identity-{joined['job_id']}"
    assert joined["participant_name"] == "agent"
    await worker.wait_for("job succeeded", job_id=joined["job_id"])


async def test_load_example_counts_jobs_not_cpu(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start("examples.agents.load:opts", livekit, agent_name=agent_name)
    doc = await worker.document()
    assert (doc["worker_load"], doc["load_threshold"], doc["state"]) == (0.0, 0.9, "available")
    await livekit.dispatch(agent_name, room_name())
    await worker.wait_for("job succeeded")


async def test_publisher_example_runs_one_job_for_a_publisher(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(
        "examples.agents.publisher:opts", livekit, agent_name=agent_name, env=NO_CPU_LIMIT
    )
    room = room_name()
    await livekit.dispatch(agent_name, room)
    cam = rtc.Room()
    await asyncio.wait_for(cam.connect(livekit.url, livekit.token("cam", room)), 20)
    try:
        source = rtc.AudioSource(48000, 1)
        track = rtc.LocalAudioTrack.create_audio_track("mic", source)
        await asyncio.wait_for(cam.local_participant.publish_track(track), 20)
        [record] = await worker.wait_for("job for publisher", room=room)
        assert record["publisher"] == "cam"
    finally:
        await cam.disconnect()


async def test_basic_example_run_as_a_script_joins_and_sees_the_user(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    room = room_name()
    user = rtc.Room()
    await asyncio.wait_for(user.connect(livekit.url, livekit.token("user", room)), 20)
    try:
        worker = await workers.start(
            "",
            livekit,
            agent_name=agent_name,
            env=NO_CPU_LIMIT,
            ready=False,
            command=[sys.executable, "-m", "examples.agents.basic", "start"],
        )
        await worker.wait_ready()
        await livekit.dispatch(agent_name, room)
        await worker.wait_for("participant in room", identity="user", within_s=30)
        [run] = await worker.wait_for("job running")

        async def agent_joined() -> bool:
            return f"agent-{run['job_id']}" in user.remote_participants

        await eventually(
            agent_joined,
            within_s=20,
            what="the agent in the room",
            last=lambda: list(user.remote_participants),
        )
    finally:
        await user.disconnect()
