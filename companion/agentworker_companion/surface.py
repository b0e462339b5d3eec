"""The contract's HTTP server: /, /healthz, /readyz, /worker, /metrics, POST and DELETE /retire.

The routes and answers are the runtime's (worker_runtime/README.md), so the operator, its
probes and a PodMonitor treat both alike: /worker's change stream too (its `generation` and the
long poll `GET /worker?after=<generation>`, `Changes`). It only moves data: `hooks.Companion`
hands it a snapshot function, the `Changes` it tells of what livekit-agents does, and the two
handshake functions.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import re
import uuid
from collections.abc import Awaitable, Iterator, Mapping
from dataclasses import dataclass
from typing import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agentworker_companion import state

log = logging.getLogger("agentworker.companion")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_BODY_BYTES = 1024
MAX_WAIT_S = 30.0
"""The longest a long poll (`GET /worker?after=`) is held; a larger `wait` is cut to this, and
this is the wait when none is given."""

Snapshot = Callable[[], state.Facts]
Handshake = Callable[[], Awaitable[str]]
"""POST or DELETE /retire: a refusal reason, or "" for yes."""


class _FactsCollector(Collector):
    """The gauges, read from the worker at scrape time (nothing to keep in step)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        facts = self._snapshot()
        current = state.worker_state(facts)
        values = (
            ("agentworker_worker_active_jobs", "Jobs running now.", len(facts.jobs)),
            ("agentworker_worker_load", "Load last reported to LiveKit (0-1).", facts.load),
            ("agentworker_worker_registered", "1 while registered with LiveKit.", facts.registered),
            ("agentworker_worker_draining", "1 while draining.", current == "draining"),
            (
                "agentworker_worker_retired",
                "1 while retired (POST /retire), until it expires.",
                current == "retired",
            ),
            (
                "agentworker_worker_idle_processes",
                "Prewarmed processes waiting for a job.",
                facts.idle_processes,
            ),
        )
        for name, text, value in values:
            yield GaugeMetricFamily(name, text, value=float(value))


class Metrics:
    """The runtime's agentworker_worker_* metrics, in a registry of the companion's own."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.registry = r = CollectorRegistry()
        r.register(_FactsCollector(snapshot))
        self.jobs_started = Counter(
            "agentworker_worker_jobs_started", "Jobs whose entrypoint ran.", registry=r
        )
        self.jobs_succeeded = Counter(
            "agentworker_worker_jobs_succeeded", "Jobs that ended cleanly.", registry=r
        )
        self.jobs_failed = Counter(
            "agentworker_worker_jobs_failed", "Jobs that failed, by reason.", ["reason"], registry=r
        )
        self.job_start_latency = Histogram(
            "agentworker_worker_job_start_latency_seconds",
            "Time from the job assignment to its entrypoint being called.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class BadPoll(ValueError):
    """A long poll's query parameter is not what the contract says; the message says why."""


@dataclass(frozen=True)
class Poll:
    """`GET /worker?after=<generation>[&wait=<seconds>][&instance=<id>]`, parsed."""

    after: int
    """Answer at once unless the document's generation is still this one."""
    wait_s: float
    """Hold the request at most this long (at most `MAX_WAIT_S`)."""
    instance: str = ""
    """When given and not this process's instance, answer at once (the worker restarted)."""

    def holds(self, *, generation: int, instance: str) -> bool:
        """Whether a document of `generation`, by the process `instance`, is no news."""
        return generation == self.after and self.instance in ("", instance)


_GENERATION = re.compile(r"[0-9]{1,18}")


def parse_poll(query: Mapping[str, str]) -> Poll | None:
    """The long poll a /worker query asks for, or None for a plain read (no `after`); the
    runtime's rules and messages (`worker_runtime.http_api.parse_poll`)."""
    after, wait, instance = query.get("after"), query.get("wait"), query.get("instance", "")
    if after is None:
        if wait is not None or instance:
            raise BadPoll(
                "wait and instance need after=<generation>, the generation of the last "
                "/worker document"
            )
        return None
    if not _GENERATION.fullmatch(after):
        raise BadPoll(
            f"after={after!r} is not a generation: give the generation of the last /worker "
            "document, a whole number like 12"
        )
    wait_s = MAX_WAIT_S
    if wait is not None:
        try:
            wait_s = float(wait)
        except ValueError:
            wait_s = math.nan
        if not 0 <= wait_s < math.inf:  # nan is neither
            raise BadPoll(f"wait={wait!r} is not a number of seconds like 10 or 2.5")
        wait_s = min(wait_s, MAX_WAIT_S)
    return Poll(after=int(after), wait_s=wait_s, instance=instance)


class Changes:
    """The /worker document's generation, and the long polls waiting for the next one.

    The generation counts the changes of `state.decision_view`: 1 for the first document, one
    more at each change, never less for the life of the process, which `instance` names. The
    companion calls `observe` when livekit-agents did something that may change it; the route
    calls it too, so a document and its generation always agree. All waiters share one future,
    resolved (and replaced) at each change and at `close()`: a held request costs its wait and
    nothing else. Nothing here touches the loop before a request waits (Python 3.9 binds
    asyncio objects to a loop when they are made).
    """

    def __init__(self, instance: str = "") -> None:
        self.instance = instance or uuid.uuid4().hex
        self.generation = 0
        self.closed = False
        self._view: state.DecisionView | None = None
        self._next: asyncio.Future[None] | None = None

    def observe(self, facts: state.Facts) -> int:
        """The generation of `facts`: the last one, or one more (waking the waiters) if their
        decision view changed."""
        view = state.decision_view(facts)
        if view != self._view:
            self._view = view
            self.generation += 1
            self._wake()
        return self.generation

    async def wait(self, generation: int, timeout_s: float) -> None:
        """Return once the generation is past `generation`, on `close()`, or after `timeout_s`."""
        if self.closed or self.generation != generation:
            return
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        await asyncio.wait((self._next,), timeout=timeout_s)  # never cancels the shared future

    def close(self) -> None:
        """The server is stopping: every waiter answers now, and no request waits any more."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        if self._next is not None:
            if not self._next.done():
                self._next.set_result(None)
            self._next = None


def build_app(
    snapshot: Snapshot,
    metrics: Metrics,
    *,
    changes: Changes,
    retire: Handshake,
    unretire: Handshake,
    control_token: str,
) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        if not snapshot().healthy:
            return web.Response(status=503, text="unhealthy")
        return web.Response(text="OK")

    async def readyz(_: web.Request) -> web.Response:
        facts = snapshot()
        if state.is_ready(facts):
            return web.Response(text="OK")
        return web.Response(status=503, text=f"not ready: {state.worker_state(facts)}")

    async def worker(request: web.Request) -> web.Response:
        try:
            poll = parse_poll(request.query)
        except BadPoll as error:
            return web.json_response({"error": str(error)}, status=400)
        facts = snapshot()
        generation = changes.observe(facts)
        if poll is not None and poll.holds(generation=generation, instance=changes.instance):
            await changes.wait(generation, poll.wait_s)
            facts = snapshot()
            generation = changes.observe(facts)
        document = state.worker_document(facts)
        document.update(generation=generation, instance=changes.instance)
        return web.json_response(document)

    async def release_long_polls(_: web.Application) -> None:
        changes.close()  # runs before the server waits for the requests in flight

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    def handshake(answer: Handshake, *, success: bool) -> Callable[..., Awaitable[web.Response]]:
        async def route(request: web.Request) -> web.Response:
            if not _bearer_matches(request, control_token):
                return web.json_response({"error": "unauthorized"}, status=401)
            await request.read()  # 413 past client_max_size
            refusal = await answer()
            if refusal:  # a refused retire leaves it serving, a refused withdrawal retired
                return web.json_response({"retired": not success, "reason": refusal}, status=409)
            return web.json_response({"retired": success})

        return route

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.on_response_prepare.append(_drop_server_header)
    app.on_shutdown.append(release_long_polls)
    if control_token:  # without a token there is no handshake at all: 404, not 401
        app.add_routes(
            [
                web.post("/retire", handshake(retire, success=True)),
                web.delete("/retire", handshake(unretire, success=False)),
            ]
        )
    routes = (
        ("/", healthz),
        ("/healthz", healthz),
        ("/readyz", readyz),
        ("/worker", worker),
        ("/metrics", prometheus),
    )
    for path, handler in routes:
        app.router.add_get(path, handler)
    return app


def _bearer_matches(request: web.Request, control_token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    matches = hmac.compare_digest(given.encode(), control_token.encode())  # constant time
    return scheme == "Bearer" and matches


async def _drop_server_header(_: web.Request, response: web.StreamResponse) -> None:
    response.headers.popall("Server", None)


class Server:
    """The app on host:port."""

    def __init__(self, app: web.Application, *, host: str, port: int) -> None:
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        self._host = host
        self._port = port
        self._sites: list[web.TCPSite] = []
        self.bound: str | None = None

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host or None, self._port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        self._sites.append(site)
        self.bound = f"{self._host or '0.0.0.0'}:{self._port}"

    async def aclose(self) -> None:
        if self.bound is not None:
            self.bound = None
            await self._runner.cleanup()
