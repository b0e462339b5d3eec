"""Fixtures for every tier: no test may leave an asyncio task running; secrets are written down.

A test on the rig has its namespace deleted as it ends; the secrets made there are written down for
the leak check (tests/e2e_after) before that happens (`tests.leaks`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Generator

import pytest
import urllib3
from kubernetes.client import ApiException

from tests import leaks

logger = logging.getLogger(__name__)


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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    """Before a rig test's fixtures delete its namespace, write down the secrets made there."""
    funcargs = getattr(item, "funcargs", {})
    namespace, core = funcargs.get("namespace"), funcargs.get("core")
    if isinstance(namespace, str) and core is not None:
        try:
            listing = core.list_namespaced_secret(
                namespace, _preload_content=False, _request_timeout=10
            )
        except (ApiException, urllib3.exceptions.HTTPError) as error:  # the test's own problem
            logger.warning("cannot list the secrets of %s for the leak check: %s", namespace, error)
        else:
            leaks.record(json.loads(listing.data)["items"])
    return (yield)
