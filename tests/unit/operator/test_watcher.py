"""The long polls of workers' /worker: a change is heard at once, a restart is news, a worker
without the stream or without an answer is asked again later, and a pod no longer followed is
let go."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agentworker_operator.watcher import WorkerWatch

pytestmark = pytest.mark.timeout(5)

KEY = ("team", "agents")


class FakeWorker:
    """A /worker that long-polls as the runtime does: answers once `generation` differs from
    `after`, or after `wait` with nothing new."""

    def __init__(self) -> None:
        self.generation = 1
        self.instance = "a"
        self.streams = True
        self.requests: list[dict[str, str]] = []
        self._changed = asyncio.Event()

    def change(self, *, instance: str | None = None) -> None:
        self.generation += 1
        if instance is not None:
            self.instance, self.generation = instance, 1
        self._changed.set()
        self._changed = asyncio.Event()

    def document(self) -> dict[str, object]:
        base: dict[str, object] = {"state": "available", "jobs": []}
        if self.streams:
            base |= {"generation": self.generation, "instance": self.instance}
        return base

    async def worker(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.requests.append(query)
        after, instance = query.get("after"), query.get("instance", self.instance)
        if (
            self.streams
            and after is not None
            and (int(after), instance)
            == (
                self.generation,
                self.instance,
            )
        ):
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), float(query.get("wait", "25")))
        return web.json_response(self.document())


@pytest.fixture
async def worker() -> AsyncIterator[tuple[FakeWorker, int]]:
    fake = FakeWorker()
    app = web.Application()
    app.router.add_get("/worker", fake.worker)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield fake, server.port or 0
    finally:
        await server.close()


class Told:
    def __init__(self) -> None:
        self.keys: list[Hashable] = []
        self.event = asyncio.Event()

    def __call__(self, key: Hashable) -> None:
        self.keys.append(key)
        self.event.set()

    async def next(self, timeout_s: float = 2.0) -> Hashable:
        await asyncio.wait_for(self.event.wait(), timeout_s)
        self.event.clear()
        return self.keys[-1]


async def test_the_first_answer_and_each_change_are_news_and_the_document_is_kept(
    worker: tuple[FakeWorker, int],
) -> None:
    fake, port = worker
    told = Told()
    watch = WorkerWatch(port=port, on_change=told)
    try:
        watch.follow(KEY, ["127.0.0.1"])
        assert await told.next() == KEY  # the first answer
        heard = watch.heard("127.0.0.1")
        assert heard is not None
        assert heard.generation == 1
        await asyncio.sleep(0.1)  # the next poll is held: nothing new
        assert len(told.keys) == 1
        assert fake.requests[-1] == {"after": "1", "wait": "25", "instance": "a"}
        fake.change()
        loop = asyncio.get_running_loop()
        changed_at = loop.time()
        assert await told.next() == KEY
        assert loop.time() - changed_at < 0.5  # heard as it happened, not at a scrape
        heard = watch.heard("127.0.0.1")
        assert heard is not None
        assert heard.generation == 2
    finally:
        await watch.aclose()


async def test_a_restarted_worker_is_news_even_at_the_same_generation(
    worker: tuple[FakeWorker, int],
) -> None:
    fake, port = worker
    told = Told()
    watch = WorkerWatch(port=port, on_change=told)
    try:
        watch.follow(KEY, ["127.0.0.1"])
        await told.next()
        fake.generation = 0  # the next change makes it 1 again, from another process
        fake.change(instance="b")
        await told.next()
        heard = watch.heard("127.0.0.1")
        assert heard is not None
        assert heard.generation == 1
        assert isinstance(heard.document, dict)
        assert heard.document["instance"] == "b"
    finally:
        await watch.aclose()


async def test_a_worker_without_the_stream_is_asked_again_only_much_later(
    worker: tuple[FakeWorker, int],
) -> None:
    fake, port = worker
    fake.streams = False
    watch = WorkerWatch(port=port, on_change=Told(), no_stream_retry_s=60)
    try:
        watch.follow(KEY, ["127.0.0.1"])
        await asyncio.sleep(0.3)
        assert fake.requests == [{}]  # one plain GET, then it waits a minute
        assert watch.heard("127.0.0.1") is None  # the scrape reads such a worker
    finally:
        await watch.aclose()


async def test_a_worker_that_does_not_answer_is_asked_again_with_growing_pauses() -> None:
    told = Told()
    # nothing listens on port 9 of 127.0.0.1: each poll is refused at once
    watch = WorkerWatch(port=9, on_change=told, first_retry_s=0.05, retry_s=0.2)
    try:
        watch.follow(KEY, ["127.0.0.1"])
        await asyncio.sleep(0.6)
        assert told.keys == []
        assert watch.heard("127.0.0.1") is None
        assert watch.followed == 1
    finally:
        await watch.aclose()


async def test_pods_no_longer_followed_are_let_go(worker: tuple[FakeWorker, int]) -> None:
    _, port = worker
    told = Told()
    watch = WorkerWatch(port=port, on_change=told)
    try:
        watch.follow(KEY, ["127.0.0.1"])
        await told.next()
        watch.follow(KEY, [])
        assert watch.followed == 0
        assert watch.heard("127.0.0.1") is None
        watch.follow(("other", "fleet"), ["127.0.0.1"])
        assert await told.next() == ("other", "fleet")
        watch.forget(("other", "fleet"))
        assert watch.followed == 0
    finally:
        await watch.aclose()
