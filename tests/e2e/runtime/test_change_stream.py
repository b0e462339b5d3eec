"""The change stream of /worker end to end: a long poll answers as soon as what the operator
decides on changes, including the first load that counts a job that started.

A real worker, its load the share of 4 jobs running (measured in 0.3 s, so the job is listed
before its load counts it), no idle process (nothing else changes), and the rig's LiveKit.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import aiohttp
import pytest

from tests.e2e.runtime.harness import LiveKit, WorkerFactory, WorkerProc

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

TARGET = "tests.e2e.runtime.agents:counting"
WAIT_S = 25
"""The poll's own wait: an answer sooner than this came from a change."""
LOAD_HEARD_WITHIN_S = 2.0


async def poll(worker: WorkerProc, after: int) -> tuple[dict[str, object], float]:
    """One long poll after generation `after`: the document and how long it was held."""
    url = f"http://{worker.host}:{worker.port}/worker?after={after}&wait={WAIT_S}"
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=WAIT_S + 5)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        document = json.loads(await resp.text())
    return document, time.monotonic() - started


async def test_the_load_that_first_counts_a_new_job_answers_a_held_poll(
    workers: WorkerFactory, livekit: LiveKit, agent_name: str
) -> None:
    worker = await workers.start(TARGET, livekit, agent_name=agent_name, idle=0)
    document, _ = await poll(worker, 0)
    assert document["jobs"] == [], document
    assert document["worker_load"] == 0.0, document

    held = asyncio.create_task(poll(worker, int(str(document["generation"]))))
    await asyncio.sleep(0.5)
    assert not held.done(), "a poll of the current generation was answered with nothing new"
    room = f"room-{uuid.uuid4().hex[:8]}"
    await livekit.dispatch(agent_name, room, json.dumps({"sleep_s": 20}))
    started = await worker.wait_for("job running", within_s=20)
    job_id = started[0]["job_id"]

    # follow the stream from the held poll on: every answer comes from a change, and the load
    # that counts the job (1 of 4) is one of them, soon after the job is listed
    listed_at: float | None = None
    while True:
        document, held_s = await held
        assert held_s < WAIT_S - 1, f"no change answered the poll: {document}"
        ids = [job["id"] for job in document["jobs"]]  # type: ignore[attr-defined]
        if job_id in ids and listed_at is None:
            listed_at = time.monotonic()
        if job_id in ids and document["worker_load"] == 0.25:
            break
        assert ids in ([], [job_id]), document
        if listed_at is not None:
            assert time.monotonic() - listed_at < LOAD_HEARD_WITHIN_S, document
        held = asyncio.create_task(poll(worker, int(str(document["generation"]))))
    assert listed_at is not None
    assert time.monotonic() - listed_at < LOAD_HEARD_WITHIN_S
