"""`python -m bench.fake_workers`: one process that plays every worker of the observing benchmark.

This module owns the HTTP side of the fake fleet: it listens on each planned address
(127.77.x.y:8081, see `bench.fake_fleet`; Linux routes all of 127.0.0.0/8 to lo, so no address
needs configuring), answers GET /worker with the plan's answer for that address at this moment,
counts the requests, and serves the counts as JSON on a control address (GET
127.0.0.1:<control port>/stats) for the benchmark.

The workers that play this runtime also serve its change stream as worker_runtime/http_api.py
does: each has its own `http_api.Changes` (a generation that moves when its snapshot's decision
view does, and a random instance) stamped on its document; `GET /worker?after=` is parsed by
`http_api.parse_poll` (400 when bad) and held until that worker's generation moves or the wait
runs out. A clock task observes each changing worker as its draw ends, which wakes its held
polls as the runtime's moves do. The official worker and the faults ignore the query, as they
would. Plain reads and polls are counted apart.

It decides no answer (the plan does) and knows nothing of Kubernetes: an address is worker i's
whichever pod holds it (the phantom node's kubelet, `bench.phantom_kubelet`, gives each pod the
Deployments made the address of one worker of its AgentWorker as its IP). It prints one line,
"ready", once every address listens, and stops on SIGTERM or SIGINT, answering the held polls
first.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import enum
import signal
import sys
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from aiohttp import web

from bench import fake_fleet
from bench.fake_fleet import FleetShape
from worker_runtime import http_api

STATS_PATH = "/stats"
CLOCK_MARGIN_S = 0.01
"""How long after a draw's end the clock task looks: the new draw has surely begun."""


class PollEnd(enum.StrEnum):
    """How a long poll (`GET /worker?after=`) ended."""

    AT_ONCE = "at_once"
    """Answered at once: `after` or `instance` was not the worker's current one."""
    ON_CHANGE = "on_change"
    """Held, then answered when the worker's generation moved."""
    ON_WAIT = "on_wait"
    """Held for its whole `wait` with nothing new (or until the server stopped)."""
    DROPPED = "dropped"
    """Held, and the client went away before the answer."""
    REFUSED = "refused"
    """400: a bad `after` or `wait`, or `wait` or `instance` without `after`."""


@dataclass(frozen=True, slots=True)
class Served:
    """A worker's answer in one draw, and the generation stamped on it (0: no stream)."""

    draw: int
    answer: fake_fleet.Answer
    generation: int


class FakeWorkers:
    """The answers (cached per draw), change streams and request counts of every fake worker."""

    def __init__(self, shape: FleetShape, *, clock: Callable[[], float] = time.time) -> None:
        self._shape = shape
        self._clock = clock
        self._index = {fake_fleet.address(i): i for i in range(shape.workers)}
        self._cache: dict[int, Served] = {}
        self._changes = {
            i: http_api.Changes() for i in range(shape.workers) if fake_fleet.streams(shape, i)
        }
        self._changing = [
            i for i in range(shape.workers) if fake_fleet.kind(shape, i) is fake_fleet.Kind.CHANGING
        ]
        self.requests = [0] * shape.workers
        """Every GET /worker of each worker: plain reads and polls."""
        self.by_kind: collections.Counter[str] = collections.Counter()
        self.plain = 0
        """GET /worker without `after` (and any request to a worker without the stream)."""
        self.polls: collections.Counter[PollEnd] = collections.Counter()
        """Long polls by how they ended."""
        self.held = 0
        """Long polls held right now."""
        self.stray = 0
        """Requests to an address or path that is no worker's /worker."""
        self.connections = 0
        """TCP connections that carried a request (a client that keeps them alive reuses them)."""
        self._seen: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()

    def instance(self, index: int) -> str | None:
        """The instance id of worker `index`'s change stream; None when it serves none."""
        changes = self._changes.get(index)
        return None if changes is None else changes.instance

    def _serve(self, index: int) -> Served:
        """The answer now; a streaming worker's snapshot is observed once per draw (which moves
        its generation, and wakes its held polls, when its decision view changed)."""
        draw = fake_fleet.epoch(self._shape, index, self._clock())
        cached = self._cache.get(index)
        if cached is not None and cached.draw == draw:
            return cached
        generation, stamp = 0, None
        changes = self._changes.get(index)
        snap = fake_fleet.stream_snapshot(self._shape, index, draw)
        if changes is not None and snap is not None:
            generation = changes.observe(snap)
            stamp = {"generation": generation, "instance": changes.instance}
        cached = Served(draw, fake_fleet.answer(self._shape, index, draw, stamp=stamp), generation)
        self._cache[index] = cached
        return cached

    def refresh(self) -> None:
        """Look at every changing worker now: those whose draw ended move on (see `_serve`)."""
        for index in self._changing:
            self._serve(index)

    async def follow_changes(self) -> None:
        """Call `refresh` as each changing worker's draw ends, until cancelled."""
        while self._changing:
            now = self._clock()
            ends = (fake_fleet.next_draw_at(self._shape, i, now) for i in self._changing)
            due = min(t for t in ends if t is not None)
            await asyncio.sleep(max(0.0, due - now) + CLOCK_MARGIN_S)
            self.refresh()

    def close(self) -> None:
        """The server stops: every held poll answers now (`http_api.Changes.close`)."""
        for changes in self._changes.values():
            changes.close()

    async def worker(self, request: web.Request) -> web.Response:
        transport = request.transport
        if transport is not None and transport not in self._seen:
            self._seen.add(transport)
            self.connections += 1
        sockname = transport.get_extra_info("sockname") if transport else None
        index = self._index.get(str(sockname[0])) if sockname else None
        if index is None:
            self.stray += 1
            return web.Response(status=404, text="no such worker")
        return await self.respond(index, request.query)

    async def respond(self, index: int, query: Mapping[str, str]) -> web.Response:
        """Worker `index`'s answer to GET /worker with this query, counted."""
        self.requests[index] += 1
        self.by_kind[fake_fleet.kind(self._shape, index).value] += 1
        changes = self._changes.get(index)
        poll = None
        if changes is not None:
            try:
                poll = http_api.parse_poll(query)
            except http_api.BadPoll as error:
                self.polls[PollEnd.REFUSED] += 1
                return web.json_response({"error": str(error)}, status=400)
        if changes is None or poll is None:
            self.plain += 1
            answer = self._serve(index).answer
            if answer.delay_s:
                await asyncio.sleep(answer.delay_s)
            return _response(answer)
        return _response(await self._poll(index, poll, changes))

    async def _poll(
        self, index: int, poll: http_api.Poll, changes: http_api.Changes
    ) -> fake_fleet.Answer:
        """The answer to a long poll, held as the runtime's route holds it."""
        served = self._serve(index)
        if not poll.holds(generation=served.generation, instance=changes.instance):
            self.polls[PollEnd.AT_ONCE] += 1
            return served.answer
        self.held += 1
        try:
            await changes.wait(served.generation, poll.wait_s)
        except asyncio.CancelledError:  # the client went away (handler_cancellation)
            self.polls[PollEnd.DROPPED] += 1
            raise
        finally:
            self.held -= 1
        now = self._serve(index)
        moved = now.generation != served.generation
        self.polls[PollEnd.ON_CHANGE if moved else PollEnd.ON_WAIT] += 1
        return now.answer

    def counts(self) -> dict[str, object]:
        """What /stats serves (the benchmark takes differences of the counters)."""
        return {
            "time": time.time(),
            "requests": sum(self.requests),
            "per_worker": self.requests,
            "by_kind": dict(self.by_kind),
            "plain": self.plain,
            "polls": {end.value: self.polls[end] for end in PollEnd},
            "held": self.held,
            "streaming": len(self._changes),
            "changes": sum(max(0, c.generation - 1) for c in self._changes.values()),
            "stray": self.stray,
            "connections": self.connections,
        }

    async def stats(self, _: web.Request) -> web.Response:
        return web.json_response(self.counts())


def _response(answer: fake_fleet.Answer) -> web.Response:
    return web.Response(status=answer.status, body=answer.body, content_type=answer.content_type)


async def serve(shape: FleetShape, *, control_port: int, port: int) -> None:
    """Listen on every worker's address and the control address until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    fleet = FakeWorkers(shape)
    workers = web.Application()
    workers.router.add_get("/worker", fleet.worker)
    control = web.Application()
    control.router.add_get(STATS_PATH, fleet.stats)
    runners = [
        # a poll whose client went away (an operator stopped) ends now, not at its wait's end
        web.AppRunner(workers, access_log=None, handle_signals=False, handler_cancellation=True),
        web.AppRunner(control, access_log=None, handle_signals=False),
    ]

    def stop_if_failed(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            stop.set()  # held polls would no longer hear changes: stop, and say why (below)

    clock = asyncio.create_task(fleet.follow_changes(), name="fake-workers-clock")
    clock.add_done_callback(stop_if_failed)
    try:
        for runner in runners:
            await runner.setup()
        await web.TCPSite(runners[1], "127.0.0.1", control_port).start()
        for index in range(shape.workers):
            await web.TCPSite(runners[0], fake_fleet.address(index), port, backlog=128).start()
        print("ready", flush=True)
        await stop.wait()
    finally:
        clock.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await clock  # raises the clock's own failure, if it had one
        fleet.close()
        for runner in reversed(runners):
            await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    d = FleetShape()
    p = argparse.ArgumentParser(prog="python -m bench.fake_workers", description=__doc__)
    p.add_argument("--control-port", type=int, required=True, help="port of /stats on 127.0.0.1")
    p.add_argument("--port", type=int, default=fake_fleet.PORT, help="the workers' HTTP port")
    p.add_argument("--agentworkers", type=int, default=d.agentworkers)
    p.add_argument("--workers-per-agentworker", type=int, default=d.workers_per_agentworker)
    p.add_argument("--change-period", type=float, default=d.change_period_s, metavar="SECONDS")
    p.add_argument("--seed", type=int, default=d.seed)
    a = p.parse_args(argv)
    shape = FleetShape(
        agentworkers=a.agentworkers,
        workers_per_agentworker=a.workers_per_agentworker,
        change_period_s=a.change_period,
        seed=a.seed,
    )
    asyncio.run(serve(shape, control_port=a.control_port, port=a.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
