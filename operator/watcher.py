"""Long polls of each worker's /worker: the operator hears a worker change as it happens.

A worker that serves the change stream (`generation` and `instance` in its /worker document,
worker_runtime/README.md) answers `GET /worker?after=<generation>&wait=<s>&instance=<id>` once
its generation moves on or it is another process, or after `wait` with nothing new. One task per
worker pod keeps such a request open; when an answer brings another generation (or another
process instance: the worker restarted), the fleet is told at once (`on_change`), and its next
round reads the documents heard here instead of asking again. The periodic scrape stays the
backstop: it reads every worker anyway (the load moves no generation), and it is all a worker
without the stream gets.

This module owns only those requests and what they brought: which pods are followed (the sync
round says, `follow`), the latest document heard from each, and when. It decides nothing about
what a document means (`observation` does) and never raises into the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import aiohttp

logger = logging.getLogger(__name__)

WAIT_S = 25.0
"""How long a worker holds a poll with nothing new (under common idle timeouts of 30 s+)."""
ANSWER_MARGIN_S = 5.0
"""How much longer than WAIT_S the operator waits for the answer before it asks again."""
FIRST_RETRY_S = 0.5
"""After a failed poll (no answer, an error status, not a document), the first pause: a new
worker's HTTP server comes up within a second or so, and its registration is news."""
RETRY_S = 5.0
"""The longest pause after failed polls (each failure doubles it): the periodic scrape's
period, so a dead worker costs about one request per period, as it does the scrape."""
NO_STREAM_RETRY_S = 60.0
"""After an answer without `generation` (a worker that serves no stream): asked again this
much later, in case the worker was updated in place."""
MAX_DOCUMENT_BYTES = 256 * 1024

K = TypeVar("K", bound=Hashable)
K_contra = TypeVar("K_contra", bound=Hashable, contravariant=True)


class Watch(Protocol[K_contra]):
    """What the sync loop needs of a watch of the workers (`WorkerWatch`, or a simulation's)."""

    def follow(self, key: K_contra, ips: Collection[str]) -> None: ...
    def forget(self, key: K_contra) -> None: ...
    def heard(self, ip: str) -> Heard | None: ...
    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Heard:
    """The latest /worker document a poll brought, and when (monotonic s)."""

    document: object
    at: float
    generation: int


class WorkerWatch(Generic[K]):
    """A long poll per followed worker pod; `aclose()` when done."""

    def __init__(
        self,
        *,
        port: int,
        on_change: Callable[[K], None],
        wait_s: float = WAIT_S,
        first_retry_s: float = FIRST_RETRY_S,
        retry_s: float = RETRY_S,
        no_stream_retry_s: float = NO_STREAM_RETRY_S,
    ) -> None:
        self._port = port
        self._on_change = on_change
        self._wait_s = wait_s
        self._first_retry_s = first_retry_s
        self._retry_s = retry_s
        self._no_stream_retry_s = no_stream_retry_s
        self._session: aiohttp.ClientSession | None = None
        self._tasks: dict[tuple[K, str], asyncio.Task[None]] = {}
        self._heard: dict[str, Heard] = {}

    def follow(self, key: K, ips: Collection[str]) -> None:
        """Poll exactly these pod IPs for the fleet `key` (new ones start, gone ones stop)."""
        wanted = {ip for ip in ips if ip}
        for (owner, ip), task in list(self._tasks.items()):
            if owner == key and ip not in wanted:
                task.cancel()
                del self._tasks[(owner, ip)]
                self._heard.pop(ip, None)
        for ip in wanted:
            if (key, ip) not in self._tasks:
                self._tasks[(key, ip)] = asyncio.create_task(
                    self._poll_forever(key, ip), name=f"watch-worker-{ip}"
                )

    def forget(self, key: K) -> None:
        """Stop following every pod of a fleet that is gone."""
        self.follow(key, ())

    def heard(self, ip: str) -> Heard | None:
        """The latest document a poll brought from the worker at ip, if any."""
        return self._heard.get(ip)

    @property
    def followed(self) -> int:
        return len(self._tasks)

    async def aclose(self) -> None:
        """Stop every poll and close the session; safe to call twice."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None and not self._session.closed:
            await self._session.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # its own session: held polls must not take the scrape's connections or slots
            connector = aiohttp.TCPConnector(limit=0)
            timeout = aiohttp.ClientTimeout(total=self._wait_s + ANSWER_MARGIN_S)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return self._session

    async def _poll_forever(self, key: K, ip: str) -> None:
        """Poll until cancelled; the fleet is told of every answer that brings news: the
        first one (a new worker, or one that answers again), another generation, or another
        process instance (the worker restarted)."""
        last: tuple[int, object] | None = None  # (generation, instance) of the last answer
        pause = self._first_retry_s
        while True:
            params: dict[str, str] = {}
            if last is not None:  # the instance too: a restarted worker answers at once
                params = {"after": str(last[0]), "wait": f"{self._wait_s:g}"}
                if isinstance(last[1], str):
                    params["instance"] = last[1]
            document = await self._get(ip, params)
            generation = _generation(document)
            if document is None or generation is None:
                last = None
                self._heard.pop(ip, None)
                if document is None:
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, self._retry_s)
                else:
                    await asyncio.sleep(self._no_stream_retry_s)
                continue
            pause = self._first_retry_s
            instance = document.get("instance") if isinstance(document, dict) else None
            self._heard[ip] = Heard(document=document, at=time.monotonic(), generation=generation)
            if last != (generation, instance):
                self._on_change(key)
            last = (generation, instance)

    async def _get(self, ip: str, params: dict[str, str]) -> object:
        """The decoded document, or None (logged at debug: the scrape reports failures)."""
        url = f"http://{ip}:{self._port}/worker"
        try:
            async with self._client().get(url, params=params, allow_redirects=False) as answer:
                if answer.status != 200:
                    logger.debug("worker poll refused", extra={"http_status": answer.status})
                    return None
                body = await answer.content.read(MAX_DOCUMENT_BYTES + 1)
        except (TimeoutError, aiohttp.ClientError) as failure:
            logger.debug("worker poll failed", extra={"error": type(failure).__name__})
            return None
        if len(body) > MAX_DOCUMENT_BYTES:
            return None
        with contextlib.suppress(ValueError):
            return json.loads(body)
        return None


def _generation(document: object) -> int | None:
    """The document's generation, or None when it has none (no stream, or no document)."""
    if not isinstance(document, dict):
        return None
    generation = document.get("generation")
    if isinstance(generation, bool) or not isinstance(generation, int):
        return None
    return generation
