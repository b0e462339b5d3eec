"""Fixtures for every tier: no test may leave an asyncio task running."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest


@pytest.fixture(autouse=True)
async def _no_leftover_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves an asyncio task behind (kopf's own suite does the same)."""
    before = asyncio.all_tasks()
    yield
    leftover = [
        t for t in asyncio.all_tasks() - before if t is not asyncio.current_task() and not t.done()
    ]
    if leftover:
        for task in leftover:
            task.cancel()
        await asyncio.gather(*leftover, return_exceptions=True)
        pytest.fail(f"test left asyncio tasks running: {[t.get_name() for t in leftover]}")
