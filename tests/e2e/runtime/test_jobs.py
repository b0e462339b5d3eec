"""Jobs end to end: dispatch, rejection, load, PUBLISHER jobs, and a job joining its room."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from livekit import rtc

from tests.e2e.runtime.harness import LiveKit, WorkerFactory, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

AGENTS = "tests.e2e.runtime.agents"


def room_name() -> str:
    return f"room-{uuid.uuid4().hex[:8]}"


async def test_dispatch_runs_entrypoint_with_metadata_in_a_prewarmed_process(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(f"{AGENTS}:opts", livekit, agent_name=agent_name, idle=1)
    metadata = json.dumps({"user_id": "u-1"})
    room = room_name()
    await livekit.dispatch(agent_name, room, metadata)

    [run] = await worker.wait_for("e2e job running", room=room)
    assert run["metadata"] == metadata
    assert run["prewarmed_in"] == run["job_pid"], "the job ran in the process prewarm ran in"
    assert run["job_pid"] != worker.popen.pid
    await worker.wait_for("job succeeded", job_id=run["job_id"])
    await worker.wait_idle(1)  # the used process was replaced
    status, metrics = await worker.get("/metrics")
    assert status == 200
    assert "agentworker_worker_jobs_succeeded_total 1.0" in metrics
    assert "agentworker_worker_job_start_latency_seconds_count 1.0" in metrics


@pytest.mark.parametrize(
    ("options", "logged"),
    [
        ("rejecting", "request_fnc rejected the job"),
        ("raising", "request_fnc failed, rejecting the job"),
    ],
    ids=["rejects", "raises"],
)
async def test_job_refused_by_request_fnc_goes_to_another_worker(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str, options: str, logged: str
) -> None:
    refusing = await workers.start(f"{AGENTS}:{options}", livekit, agent_name=agent_name)
    accepting = await workers.start(f"{AGENTS}:opts", livekit, agent_name=agent_name)
    rooms: list[str] = []
    # LiveKit picks either worker at random; dispatch until the refusing one was asked.
    for _ in range(12):
        rooms.append(room_name())
        await livekit.dispatch(agent_name, rooms[-1])
        await accepting.wait_for("e2e job running", room=rooms[-1])
        if refusing.find("e2e rejecting"):
            break
    assert refusing.find(logged), "the refusing worker was never asked"
    assert not refusing.find("e2e job running")
    assert len(accepting.find("e2e job running")) == len(rooms)
    assert await refusing.status("/readyz") == 200


async def test_worker_above_load_threshold_gets_no_jobs_and_stays_ready(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    busy = await workers.start(f"{AGENTS}:busy", livekit, agent_name=agent_name)
    free = await workers.start(f"{AGENTS}:opts", livekit, agent_name=agent_name)

    async def is_full() -> bool:
        return (await busy.document())["state"] == "full"

    await eventually(is_full, within_s=10, what="busy worker reports full")
    assert await busy.status("/readyz") == 200, "a full worker must stay ready"
    assert (await busy.document())["worker_load"] == pytest.approx(0.95)
    rooms = [room_name() for _ in range(4)]
    for room in rooms:
        await livekit.dispatch(agent_name, room)
    for room in rooms:
        await free.wait_for("e2e job running", room=room)
    assert not busy.find("job offered")


async def test_worker_reports_full_above_threshold_and_available_again_below(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str, tmp_path: Path
) -> None:
    load_file = tmp_path / "load"
    load_file.write_text("0.95")
    worker = await workers.start(
        f"{AGENTS}:steerable",
        livekit,
        agent_name=agent_name,
        env={"E2E_LOAD_FILE": str(load_file)},
    )
    seen: list[object] = []

    def in_state(state: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            seen.append((await worker.document())["state"])
            return seen[-1] == state

        return check

    await eventually(in_state("full"), within_s=10, what="full", last=lambda: seen[-1:])
    load_file.write_text("0.1")
    await eventually(in_state("available"), within_s=10, what="available", last=lambda: seen[-1:])
    room = room_name()
    await livekit.dispatch(agent_name, room)
    await worker.wait_for("e2e job running", room=room)
    assert worker.find("worker state changed", to="available")


async def publish_audio(livekit: LiveKit, room: str, identity: str) -> rtc.Room:
    participant = rtc.Room()
    await asyncio.wait_for(participant.connect(livekit.url, livekit.token(identity, room)), 20)
    source = rtc.AudioSource(48000, 1)
    track = rtc.LocalAudioTrack.create_audio_track("mic", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    await asyncio.wait_for(participant.local_participant.publish_track(track, options), 20)
    return participant


async def test_publisher_worker_gets_one_job_per_publisher(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(f"{AGENTS}:publisher", livekit, agent_name=agent_name, idle=2)
    room = room_name()
    await livekit.dispatch(agent_name, room)
    participants = [await publish_audio(livekit, room, f"cam-{i}") for i in range(2)]
    try:
        runs = await worker.wait_for("e2e job running", room=room, count=2)
        assert sorted(str(r["publisher"]) for r in runs) == ["cam-0", "cam-1"]
        assert len({r["job_id"] for r in runs}) == 2
    finally:
        for p in participants:
            await p.disconnect()
    assert len(worker.find("e2e job running", room=room)) == 2


async def test_connect_joins_the_room_and_a_participant_receives_publish_data(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(f"{AGENTS}:greeting", livekit, agent_name=agent_name)
    room = room_name()
    user = rtc.Room()
    received: asyncio.Queue[rtc.DataPacket] = asyncio.Queue()
    user.on("data_received", received.put_nowait)
    await asyncio.wait_for(user.connect(livekit.url, livekit.token("user", room)), 20)
    try:
        await livekit.dispatch(agent_name, room)
        [run] = await worker.wait_for("job running")
        agent_identity = f"agent-{run['job_id']}"

        async def agent_is_in_the_room() -> bool:
            return agent_identity in user.remote_participants

        await eventually(
            agent_is_in_the_room,
            within_s=20,
            what="the agent participant",
            last=lambda: list(user.remote_participants),
        )
        await worker.wait_for("e2e greeter sees", identity="user")
        await user.local_participant.publish_data("ping", destination_identities=[agent_identity])
        packet = await asyncio.wait_for(received.get(), 20)
        assert packet.data == b"hello world"
        assert packet.participant is not None
        assert packet.participant.identity == agent_identity
    finally:
        await user.disconnect()
