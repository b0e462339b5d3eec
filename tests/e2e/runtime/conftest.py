"""Fixtures for the runtime's e2e tests: the rig's LiveKit server, workers as subprocesses.

The shared server comes from `tests.rig.env.load()`; the restart and outage tests start their
own dedicated livekit-server from the same binary so that they can stop, restart or cut it off.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.e2e.runtime.harness import (
    DedicatedLiveKit,
    LiveKit,
    WorkerFactory,
    find_livekit_server,
)
from tests.rig import env as rig_env


@pytest.fixture(scope="session")
def livekit() -> LiveKit:
    """The rig's LiveKit server (`make rig` writes where it is)."""
    rig = rig_env.load()
    return LiveKit(
        url=rig.livekit_url, api_key=rig.livekit_api_key, api_secret=rig.livekit_api_secret
    )


@pytest.fixture
def agent_name() -> str:
    """A name no other test's worker registers, so dispatches never cross tests."""
    return f"e2e-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[WorkerFactory]:
    """Starts workers as `agent-worker` subprocesses; kills whatever is left at the end."""
    factory = WorkerFactory(tmp_path)
    try:
        yield factory
    finally:
        await factory.close()


@pytest.fixture
def dedicated_livekit(tmp_path: Path) -> Iterator[DedicatedLiveKit]:
    """A livekit-server of our own (same binary as the rig's), which the test may restart."""
    server = DedicatedLiveKit(find_livekit_server(), tmp_path / "livekit")
    server.start()
    try:
        yield server
    finally:
        server.stop()
