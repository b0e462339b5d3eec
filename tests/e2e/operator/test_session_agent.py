"""A real `AgentSession` agent (`session_agent`) holds a conversation on three livekit-agents lines.

The official worker runs the agent from livekit-agents' own venv against the rig's LiveKit server;
a dispatch sends it into a room where a caller (`conversation`) types a line and speaks a tone and
checks that the answers echo what it said, as text and as audio, and that the call ran to its end.
The worker runs in livekit-agents' `dev` mode without reload: it is the mode in which livekit-agents
itself picks a free HTTP port (`start` binds 0.0.0.0:8081, which every worker on this host shares).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from livekit import api

from bench import venv
from tests.e2e.operator import conversation
from tests.e2e.operator.calls import Ledger
from tests.rig import env as rig_env
from tests.waiting import async_wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

AGENT_DIR = Path(__file__).resolve().parent
"""The worker's cwd: the repository root would shadow the standard library's `operator`."""
HOLD_S = 20.0
"""The call's length from the session's start: the two exchanges take about 6 s."""
REGISTER_TIMEOUT_S = 90.0


@pytest.fixture(params=venv.TESTED_VERSIONS, ids=lambda version: f"livekit-agents-{version}")
def agents_python(request: pytest.FixtureRequest) -> Path:
    """livekit-agents' own interpreter for each release tested (never this project's venv)."""
    return venv.ensure_official_venv(request.param)


@asynccontextmanager
async def session_worker(
    python: Path, rig: rig_env.RigEnv, agent_name: str, log_path: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """The official worker running session_agent.py; stopped (SIGTERM, then SIGKILL) at the end."""
    environ = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "LIVEKIT_URL": rig.livekit_url,
        "LIVEKIT_API_KEY": rig.livekit_api_key,
        "LIVEKIT_API_SECRET": rig.livekit_api_secret,
        "AGENT_NAME": agent_name,
    }
    with log_path.open("ab") as log:
        worker = await asyncio.create_subprocess_exec(
            str(python),
            "session_agent.py",
            "dev",
            "--no-reload",
            cwd=AGENT_DIR,
            env=environ,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its job processes go with it
        )
    try:
        yield worker
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(worker.wait(), 30)
        except TimeoutError:
            os.killpg(worker.pid, signal.SIGKILL)
            await asyncio.wait_for(worker.wait(), 10)


async def wait_registered(worker: asyncio.subprocess.Process, log_path: Path) -> None:
    """Until the worker registered with LiveKit: a dispatch that finds no worker is dropped."""

    async def log_text() -> str:
        assert worker.returncode is None, (
            f"the worker exited ({worker.returncode}): {tail(log_path)}"
        )
        return await asyncio.to_thread(log_path.read_text, errors="replace")

    await async_wait_for(
        "the session worker registered with LiveKit",
        log_text,
        lambda text: "registered worker" in text,
        timeout_s=REGISTER_TIMEOUT_S,
    )


def tail(log_path: Path, lines: int = 30) -> str:
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])


async def dispatch(rig: rig_env.RigEnv, agent_name: str, room: str, metadata: str) -> None:
    request = api.CreateAgentDispatchRequest(agent_name=agent_name, room=room, metadata=metadata)
    async with api.LiveKitAPI(rig.livekit_url, rig.livekit_api_key, rig.livekit_api_secret) as lk:
        await asyncio.wait_for(lk.agent_dispatch.create_dispatch(request), 10)


async def test_a_caller_hears_the_session_agent_echo_its_text_and_its_tone_then_the_call_completes(
    rig: rig_env.RigEnv, agents_python: Path, tmp_path: Path
) -> None:
    agent_name = f"session-{uuid.uuid4().hex[:8]}"
    room, nonce = f"{agent_name}-call", uuid.uuid4().hex[:6]
    ledger, log_path = Ledger(tmp_path / "calls.jsonl"), tmp_path / "worker.log"
    script = (conversation.Text(f"hello {nonce}"), conversation.Tone(550.0))

    async def ledger_ends() -> dict[str, dict[str, Any]]:
        return await asyncio.to_thread(ledger.ended)

    async with session_worker(agents_python, rig, agent_name, log_path) as worker:
        await wait_registered(worker, log_path)
        meta = {"hold_s": HOLD_S, "ledger": str(ledger.path), "real": True}
        async with asyncio.TaskGroup() as group:  # a failed dispatch hangs the caller up
            talking = group.create_task(
                conversation.converse(
                    rig.livekit_url,
                    rig.livekit_api_key,
                    rig.livekit_api_secret,
                    room,
                    script,
                    stay_s=HOLD_S + 30,
                )
            )
            await dispatch(rig, agent_name, room, json.dumps(meta))
        call = talking.result()
        ended = await async_wait_for(
            "the call's end in the ledger",
            ledger_ends,
            lambda ends: room in ends,
            timeout_s=30,
        )
    log = await asyncio.to_thread(tail, log_path)
    assert call.agent_joined, f"the agent never joined: {log}"
    typed, spoken = call.replies
    assert typed.text == f"you said: hello {nonce}", f"{call}\n{log}"
    assert spoken.text == "you said: a 550 hertz tone", f"{call}\n{log}"
    for reply in call.replies:
        assert reply.loud_frames > 10, f"no audio heard after {reply.said}: {call}"
    assert call.said_bye, f"the agent left without its bye: {call}"
    assert not call.cut, call
    assert ledger.started()[room]["real"] is True
    assert ended[room]["how"] == "completed", ended[room]
