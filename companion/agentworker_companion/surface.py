"""The contract's HTTP server: /, /healthz, /readyz, /worker, /metrics, POST and DELETE /retire.

The routes and answers are the runtime's (worker_runtime/README.md), so the operator, its
probes and a PodMonitor treat both alike. It only moves data: `Hooks` hands it a snapshot
function and the two handshake functions.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Iterator
from typing import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agentworker_companion import state

log = logging.getLogger("agentworker.companion")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_BODY_BYTES = 1024

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


def build_app(
    snapshot: Snapshot,
    metrics: Metrics,
    *,
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

    async def worker(_: web.Request) -> web.Response:
        return web.json_response(state.worker_document(snapshot()))

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
