"""`python -m bench.fake_workers`: one process that plays every worker of the observing benchmark.

This module owns the HTTP side of the fake fleet: it listens on each planned address
(127.77.x.y:8081, see `bench.fake_fleet`; Linux routes all of 127.0.0.0/8 to lo, so no address
needs configuring), answers GET /worker with the plan's answer for that address at this moment,
counts the requests, and serves the counts as JSON on a control address (GET
127.0.0.1:<control port>/stats) for the benchmark. It decides no answer (the plan does) and
knows nothing of Kubernetes. It prints one line, "ready", once every address listens, and stops
on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import sys
import time
import weakref
from collections.abc import Sequence

from aiohttp import web

from bench import fake_fleet
from bench.fake_fleet import FleetShape

STATS_PATH = "/stats"


class FakeWorkers:
    """The answers (cached per draw) and the request counts of every fake worker."""

    def __init__(self, shape: FleetShape) -> None:
        self._shape = shape
        self._index = {fake_fleet.address(i): i for i in range(shape.workers)}
        self._cache: dict[int, tuple[int, fake_fleet.Answer]] = {}
        self.requests = [0] * shape.workers
        self.by_kind: collections.Counter[str] = collections.Counter()
        self.stray = 0
        """Requests to an address or path that is no worker's /worker."""
        self.connections = 0
        """TCP connections that carried a request (a client that keeps them alive reuses them)."""
        self._seen: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()

    def _answer(self, index: int) -> fake_fleet.Answer:
        draw = fake_fleet.epoch(self._shape, index, time.time())
        cached = self._cache.get(index)
        if cached is None or cached[0] != draw:
            cached = (draw, fake_fleet.answer(self._shape, index, draw))
            self._cache[index] = cached
        return cached[1]

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
        self.requests[index] += 1
        self.by_kind[fake_fleet.kind(self._shape, index).value] += 1
        answer = self._answer(index)
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        return web.Response(
            status=answer.status, body=answer.body, content_type=answer.content_type
        )

    async def stats(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "time": time.time(),
                "requests": sum(self.requests),
                "per_worker": self.requests,
                "by_kind": dict(self.by_kind),
                "stray": self.stray,
                "connections": self.connections,
            }
        )


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
        web.AppRunner(workers, access_log=None, handle_signals=False),
        web.AppRunner(control, access_log=None, handle_signals=False),
    ]
    try:
        for runner in runners:
            await runner.setup()
        await web.TCPSite(runners[1], "127.0.0.1", control_port).start()
        for index in range(shape.workers):
            await web.TCPSite(runners[0], fake_fleet.address(index), port, backlog=128).start()
        print("ready", flush=True)
        await stop.wait()
    finally:
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
