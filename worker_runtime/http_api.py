"""The worker's HTTP server: /healthz, /readyz, /worker (JSON), /metrics and /retire.

Owns the routes and the shape of the /worker document, a superset of livekit-agents' own
(worker_type, agent_name, active_jobs, sdk_version, worker_load, protocol_version) that the
operator reads, and its change stream: the document's `generation`, which counts the changes of
what the operator decides on (`decision_view`), and the long polls that wait for the next one
(`GET /worker?after=<generation>`, `Changes`). It only moves data: the worker hands it a function
returning a snapshot, the `Changes` it tells of its moves, and the two functions that decide the
victim handshake (POST and DELETE /retire). It answers what the README documents and nothing
else: other methods 405 (with Allow), other paths 404, no static files, no Server header, request
bodies of at most `MAX_BODY_BYTES`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from worker_runtime.metrics import CONTENT_TYPE, WorkerMetrics

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024
"""No route takes a body; POST and DELETE /retire read (and ignore) at most this much, else 413."""
MAX_WAIT_S = 30.0
"""The longest a long poll (`GET /worker?after=`) is held; a larger `wait` is cut to this, and
this is the wait when none is given."""


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
    load_jobs: int = 0
    """How many jobs ran when `load` was measured: a load that catches up with a job that came
    or went is news (`decision_view`)."""


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


DecisionView = tuple[str, str, bool, bool, frozenset[str], int, float, int]


def decision_view(snap: WorkerSnapshot) -> DecisionView:
    """What the operator decides on: the generation grows exactly when this changes.

    The worker id, state, draining, retired, the ids of the running jobs, the idle processes,
    the threshold, and how many jobs the load was measured with; not the load itself, which
    moves with every sample (every 0.5 s) and would wake every long poll: the operator's
    periodic read covers it. The load that first counts a job that started (or no longer counts
    one that ended) is news: without it the operator hears the new job with the load of before
    and learns the fleet needs another worker a sample later.
    """
    return (
        snap.worker_id,
        snap.state,
        snap.draining,
        snap.retired,
        frozenset(j.id for j in snap.jobs),
        snap.idle_processes,
        snap.load_threshold,
        snap.load_jobs,
    )


class BadPoll(ValueError):
    """A long poll's query parameter is not what the README documents; the message says why."""


@dataclass(frozen=True, slots=True, kw_only=True)
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
    """The long poll a /worker query asks for, or None for a plain read (no `after`).

    `BadPoll` names the parameter, the value and what would be right.
    """
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

    The generation counts the changes of `decision_view`: 1 for the first document, one more at
    each change, never less for the life of the process, which `instance` names (a restarted
    worker counts from 1 again under a new instance). The worker calls `observe` when something
    may have changed; the routes call it too, so a document and its generation always agree.
    All waiters share one future, resolved (and replaced) at each change and at `close()`: a
    held request costs its wait and nothing else.
    """

    def __init__(self, instance: str = "") -> None:
        self.instance = instance or uuid.uuid4().hex
        self.generation = 0
        self.closed = False
        self._view: DecisionView | None = None
        self._next: asyncio.Future[None] | None = None

    def observe(self, snap: WorkerSnapshot) -> int:
        """The generation of `snap`: the last one, or one more (waking the waiters) if its
        decision view changed."""
        view = decision_view(snap)
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
    snapshot: Callable[[], WorkerSnapshot],
    metrics: WorkerMetrics,
    *,
    changes: Changes,
    retire: Callable[[], str],
    unretire: Callable[[], str],
    control_token: str,
) -> web.Application:
    """The four routes (and "/" like livekit-agents), plus /retire when a token is set.

    `changes` gives /worker its generation and holds its long polls; the app closes it as it
    shuts down, so that no held request delays the end. `retire` (POST /retire) and `unretire`
    (DELETE /retire) answer a refusal reason, or "" for yes.
    """

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def readyz(_: web.Request) -> web.Response:
        snap = snapshot()
        if snap.ready:
            return web.Response(text="OK")
        return web.Response(status=503, text=f"not ready: {snap.state}")

    async def worker(request: web.Request) -> web.Response:
        try:
            poll = parse_poll(request.query)
        except BadPoll as error:
            return web.json_response({"error": str(error)}, status=400)
        snap = snapshot()
        generation = changes.observe(snap)
        if poll is not None and poll.holds(generation=generation, instance=changes.instance):
            await changes.wait(generation, poll.wait_s)
            snap = snapshot()
            generation = changes.observe(snap)
        stamp = {"generation": generation, "instance": changes.instance}
        return web.json_response(worker_document(snap) | stamp)

    async def release_long_polls(_: web.Application) -> None:
        changes.close()  # runs before the server waits for the requests in flight

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.on_response_prepare.append(_drop_server_header)
    app.on_shutdown.append(release_long_polls)
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
        # the shutdown timeout belongs to the runner (aiohttp deprecates a site's since 3.9)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        self._host = host
        self._port = port
        self._started = False
        self.bound_port = port

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
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
