"""The worker's HTTP server: /healthz, /readyz, /worker (JSON), /metrics and /retire.

Owns the routes and the shape of the /worker document, a superset of livekit-agents' own
(worker_type, agent_name, active_jobs, sdk_version, worker_load, protocol_version) that the
operator reads. It only moves data: the worker hands it a function returning a snapshot, and
the two that decide the victim handshake (POST and DELETE /retire). It answers what the README
documents and nothing else: other methods 405 (with Allow), other paths 404, no static files, no
Server header, request bodies of at most `MAX_BODY_BYTES`.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from worker_runtime.metrics import CONTENT_TYPE, WorkerMetrics

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024
"""No route takes a body; POST and DELETE /retire read (and ignore) at most this much, else 413."""


class PortInUse(RuntimeError):
    """The HTTP server could not bind; the message names the address and the variables."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSummary:
    id: str
    room: str
    started_at: float
    """Unix seconds."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSnapshot:
    """What the worker is, as /worker and /readyz report it."""

    worker_id: str
    state: str
    ready: bool
    draining: bool
    agent_name: str
    worker_type: str
    load: float
    load_threshold: float
    jobs: tuple[JobSummary, ...]
    idle_processes: int
    retired: bool
    sdk_version: str
    protocol_version: int


def worker_document(snap: WorkerSnapshot) -> dict[str, object]:
    """The /worker JSON: livekit-agents' names first, then ours."""
    threshold: float | None = snap.load_threshold if snap.load_threshold != float("inf") else None
    return {
        "agent_name": snap.agent_name,
        "worker_type": snap.worker_type,
        "active_jobs": len(snap.jobs),
        "sdk_version": snap.sdk_version,
        "worker_load": snap.load,
        "protocol_version": snap.protocol_version,
        "project_type": "python",
        "worker_id": snap.worker_id,
        "state": snap.state,
        "draining": snap.draining,
        "load_threshold": threshold,
        "jobs": [{"id": j.id, "room": j.room, "started_at": j.started_at} for j in snap.jobs],
        "idle_processes": snap.idle_processes,
        "retired": snap.retired,
    }


def build_app(
    snapshot: Callable[[], WorkerSnapshot],
    metrics: WorkerMetrics,
    *,
    retire: Callable[[], str],
    unretire: Callable[[], str],
    control_token: str,
) -> web.Application:
    """The four routes (and "/" like livekit-agents), plus /retire when a token is set.

    `retire` (POST /retire) and `unretire` (DELETE /retire) answer a refusal reason, or "" for yes.
    """

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def readyz(_: web.Request) -> web.Response:
        snap = snapshot()
        if snap.ready:
            return web.Response(text="OK")
        return web.Response(status=503, text=f"not ready: {snap.state}")

    async def worker(_: web.Request) -> web.Response:
        return web.json_response(worker_document(snapshot()))

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.on_response_prepare.append(_drop_server_header)
    if control_token:  # without a token there is no handshake at all: 404, not 401
        app.add_routes(_handshake_routes(retire, unretire, control_token))
    for path, handler in (
        ("/", healthz),
        ("/healthz", healthz),
        ("/readyz", readyz),
        ("/worker", worker),
        ("/metrics", prometheus),
    ):
        app.router.add_get(path, handler)  # and HEAD, as HTTP asks of every GET resource
    return app


def _handshake_routes(
    retire: Callable[[], str], unretire: Callable[[], str], control_token: str
) -> list[web.RouteDef]:
    """POST and DELETE /retire: the operator's victim handshake and its withdrawal.

    Both want `Authorization: Bearer <AGENT_CONTROL_TOKEN>` (the scheme is required), else 401.
    POST /retire: 200 when the worker held no job and now takes none until SIGTERM, DELETE
    /retire or the retirement's expiry; 409 when busy. DELETE /retire: 200 when the worker
    serves again (or was not retired); 409 when it is draining or closed and stays out.
    """

    async def retire_route(request: web.Request) -> web.Response:
        if not _bearer_matches(request, control_token):
            return web.json_response({"error": "unauthorized"}, status=401)
        await request.read()  # 413 past client_max_size: a body, if any, stays small
        refusal = retire()
        if refusal:
            return web.json_response({"retired": False, "reason": refusal}, status=409)
        return web.json_response({"retired": True})

    async def unretire_route(request: web.Request) -> web.Response:
        if not _bearer_matches(request, control_token):
            return web.json_response({"error": "unauthorized"}, status=401)
        await request.read()  # as for POST: a body, if any, stays small
        refusal = unretire()
        if refusal:
            return web.json_response({"retired": True, "reason": refusal}, status=409)
        return web.json_response({"retired": False})

    # one resource for both methods, so that a 405 on /retire allows both
    return [web.post("/retire", retire_route), web.delete("/retire", unretire_route)]


def _bearer_matches(request: web.Request, control_token: str) -> bool:
    """Whether the request carries `Authorization: Bearer <control_token>`."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    matches = hmac.compare_digest(given.encode(), control_token.encode())  # constant time
    return scheme == "Bearer" and matches


async def _drop_server_header(_: web.Request, response: web.StreamResponse) -> None:
    """aiohttp names itself and the Python version; a prober learns nothing from us."""
    response.headers.popall("Server", None)


class HttpServer:
    """Runs the application on host:port; `start()` raises `PortInUse` when it cannot bind."""

    def __init__(self, app: web.Application, *, host: str, port: int) -> None:
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self._host = host
        self._port = port
        self._started = False
        self.bound_port = port

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, shutdown_timeout=1.0)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise PortInUse(
                f"cannot serve HTTP on {self._host}:{self._port} ({exc.strerror}): "
                "set AGENT_PORT (or AGENT_HOST / POD_IP) to a free address"
            ) from None
        self._started = True
        sockets = self._runner.addresses
        if sockets:
            self.bound_port = int(sockets[0][1])
        logger.info("http server listening", extra={"host": self._host, "port": self.bound_port})

    async def aclose(self) -> None:
        """Stop serving; idempotent."""
        if self._started:
            self._started = False
            await self._runner.cleanup()
