"""The API client tries again on 429, 5xx and dropped connections, and gives up after a few.

A local HTTP server on 127.0.0.1 stands in for a busy API server (the rig's own would not
answer 429 on demand); everything else of the client is as in production.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from agentworker_operator import kube

pytestmark = [pytest.mark.integration, pytest.mark.timeout(20)]


@pytest.fixture
async def busy_server() -> AsyncIterator[tuple[str, list[int]]]:
    """A server answering the statuses queued in the list, then 200; its URL and the queue."""
    queue: list[int] = []

    async def answer(_: web.Request) -> web.Response:
        if queue:
            status = queue.pop(0)
            headers = {"Retry-After": "0"} if status == 429 else {}
            return web.json_response({"reason": "Busy", "message": "try later"}, status=status,
                                     headers=headers)  # fmt: skip
        return web.json_response({"kind": "Thing"})

    app = web.Application()
    app.router.add_get("/thing", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", queue
    finally:
        await runner.cleanup()


def client(server: str) -> kube.Kube:
    return kube.Kube.connect(kube.Connection(server=server, ssl_context=False, token=lambda: None))


async def test_429_and_5xx_are_tried_again(busy_server: tuple[str, list[int]]) -> None:
    server, queue = busy_server
    queue += [429, 503, 500]
    async with client(server) as api:
        assert await api.request("GET", "/thing") == {"kind": "Thing"}
    assert queue == []


async def test_it_gives_up_after_a_few_tries_with_the_servers_message(
    busy_server: tuple[str, list[int]],
) -> None:
    server, queue = busy_server
    queue += [503] * 10
    async with client(server) as api:
        with pytest.raises(kube.Throttled, match="try later"):
            await api.request("GET", "/thing")
    assert len(queue) == 10 - (kube.RETRIES + 1)


async def test_a_client_error_is_not_tried_again(busy_server: tuple[str, list[int]]) -> None:
    server, queue = busy_server
    queue += [422, 503]
    async with client(server) as api:
        with pytest.raises(kube.KubeError) as refused:
            await api.request("GET", "/thing")
    assert refused.value.status == 422
    assert queue == [503]
