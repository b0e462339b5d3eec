"""The job process: prewarm once, run one job's entrypoint, run its shutdown callbacks, exit.

Owns what user code sees inside a job process (`JobProcess`, `JobContext`, `AutoSubscribe`) and
`process_main`, the target of every pooled process. It talks to the worker only through its pipe
(ipc messages); it never sees the WebSocket to LiveKit, and imports the livekit rtc SDK only
when a job touches its room.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import importlib
import inspect
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from types import ModuleType
from typing import TYPE_CHECKING, Any

from livekit.protocol import agent as agent_pb

from worker_runtime import ipc, logs

if TYPE_CHECKING:
    from livekit import rtc

logger = logging.getLogger(__name__)

ShutdownCallback = Callable[[], Awaitable[None]] | Callable[[str], Awaitable[None]]
CONNECT_TIMEOUT_S = 20.0


def _rtc() -> ModuleType:
    """The livekit rtc SDK, or an error that says how to install it."""
    try:
        return importlib.import_module("livekit.rtc")
    except ImportError:
        raise RuntimeError(
            "joining the room needs the livekit rtc SDK: pip install 'agentworker[rtc]'"
        ) from None


class AutoSubscribe(enum.Enum):
    """Which remote tracks `JobContext.connect` subscribes to by itself."""

    SUBSCRIBE_ALL = "subscribe_all"
    SUBSCRIBE_NONE = "subscribe_none"
    AUDIO_ONLY = "audio_only"
    VIDEO_ONLY = "video_only"


@dataclass(slots=True)
class JobProcess:
    """The process a job runs in; prewarm_fnc fills `userdata` for the entrypoint to use."""

    pid: int
    userdata: dict[str, Any] = field(default_factory=dict)


class JobContext:
    """What an entrypoint gets: its job, its process, its room and the way to end the job."""

    def __init__(
        self, *, job: agent_pb.Job, proc: JobProcess, url: str, token: str, worker_id: str
    ) -> None:
        self._job = job
        self._proc = proc
        self._url = url
        self._token = token
        self._worker_id = worker_id
        self._room: rtc.Room | None = None
        self._connected = False
        self._callbacks: list[ShutdownCallback] = []
        self._shutdown = asyncio.get_running_loop().create_future()

    @property
    def job(self) -> agent_pb.Job:
        """The job: id, metadata, room, participant (PUBLISHER jobs), agent_name, ..."""
        return self._job

    @property
    def proc(self) -> JobProcess:
        """This process; `proc.userdata` holds what prewarm_fnc loaded."""
        return self._proc

    @property
    def worker_id(self) -> str:
        """The id the server gave the worker that took this job."""
        return self._worker_id

    @property
    def url(self) -> str:
        """The LiveKit URL to join the room at."""
        return self._url

    @property
    def token(self) -> str:
        """The room token the server made for this agent (never log it)."""
        return self._token

    @property
    def room_name(self) -> str:
        """The name of the job's room."""
        return self._job.room.name

    @property
    def room(self) -> rtc.Room:
        """The rtc.Room (needs `worker_runtime[rtc]`); attach handlers before `connect()`."""
        if self._room is None:
            sdk = _rtc()

            self._room = sdk.Room()
        return self._room

    @property
    def publisher(self) -> rtc.RemoteParticipant | None:
        """For PUBLISHER jobs once connected: the publisher this job is for."""
        if not self._job.HasField("participant") or self._room is None:
            return None
        return self._room.remote_participants.get(self._job.participant.identity)

    async def connect(self, *, auto_subscribe: AutoSubscribe = AutoSubscribe.SUBSCRIBE_ALL) -> None:
        """Join the job's room as the agent participant; the job then lasts until it leaves."""
        sdk = _rtc()

        room = self.room
        options = sdk.RoomOptions(auto_subscribe=auto_subscribe is AutoSubscribe.SUBSCRIBE_ALL)
        room.on("disconnected", lambda *_: self.shutdown("room disconnected"))
        await asyncio.wait_for(room.connect(self._url, self._token, options), CONNECT_TIMEOUT_S)
        self._connected = True
        if auto_subscribe in (AutoSubscribe.AUDIO_ONLY, AutoSubscribe.VIDEO_ONLY):
            _subscribe_by_kind(room, audio=auto_subscribe is AutoSubscribe.AUDIO_ONLY)
        logger.info("connected to room", extra={"job_id": self._job.id, "room": self.room_name})

    async def wait_for_participant(self, *, identity: str | None = None) -> rtc.RemoteParticipant:
        """The first remote participant that is not an agent (or the one named `identity`)."""
        sdk = _rtc()

        room = self.room
        found: asyncio.Future[rtc.RemoteParticipant] = asyncio.get_running_loop().create_future()

        def consider(p: rtc.RemoteParticipant) -> None:
            is_agent = p.kind == sdk.ParticipantKind.PARTICIPANT_KIND_AGENT
            wanted = p.identity == identity if identity else not is_agent
            if wanted and not found.done():
                found.set_result(p)

        room.on("participant_connected", consider)
        try:
            for p in list(room.remote_participants.values()):
                consider(p)
            return await found
        finally:
            room.off("participant_connected", consider)

    def shutdown(self, reason: str = "") -> None:
        """End the job: the entrypoint is cancelled if still running, then callbacks run."""
        if not self._shutdown.done():
            self._shutdown.set_result(reason)

    def add_shutdown_callback(self, callback: ShutdownCallback) -> None:
        """`async def cb()` or `async def cb(reason)`, run when the job ends."""
        self._callbacks.append(callback)

    @property
    def connected(self) -> bool:
        """Whether `connect()` joined the room."""
        return self._connected


class SessionEnd:
    """An entrypoint whose job, when it ends, runs `on_session_end(ctx)` first of its shutdown
    callbacks, within `timeout_s` (livekit-agents' `rtc_session(on_session_end=...)`).

    It pickles by reference to its two functions, so the fork server can hand it to a process,
    and it carries the entrypoint's `__module__` and name, so that module is still preloaded.
    """

    def __init__(
        self,
        entrypoint: Callable[[JobContext], Awaitable[None]],
        on_session_end: Callable[[JobContext], Awaitable[None]],
        *,
        timeout_s: float,
    ) -> None:
        functools.update_wrapper(self, entrypoint)
        self.entrypoint = entrypoint
        self.on_session_end = on_session_end
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        name = getattr(self.on_session_end, "__qualname__", self.on_session_end)
        return f"SessionEnd({self.entrypoint!r}, on_session_end={name})"

    async def __call__(self, ctx: JobContext) -> None:
        async def session_end() -> None:
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self.on_session_end(ctx)
            except TimeoutError:
                logger.error(
                    "on_session_end timed out",
                    extra={"job_id": ctx.job.id, "timeout_s": self.timeout_s},
                )

        # registered before the entrypoint runs, so it runs before the entrypoint's callbacks
        ctx.add_shutdown_callback(session_end)
        await self.entrypoint(ctx)


def _subscribe_by_kind(room: rtc.Room, *, audio: bool) -> None:
    sdk = _rtc()

    kind = sdk.TrackKind.KIND_AUDIO if audio else sdk.TrackKind.KIND_VIDEO

    def on_published(pub: rtc.RemoteTrackPublication, *_: object) -> None:
        if pub.kind == kind:
            pub.set_subscribed(True)

    room.on("track_published", on_published)
    for p in room.remote_participants.values():
        for pub in p.track_publications.values():
            on_published(pub)


async def _run_callbacks(ctx: JobContext, reason: str) -> None:
    for callback in ctx._callbacks:
        takes_reason = len(inspect.signature(callback).parameters) > 0
        try:
            if takes_reason:
                await callback(reason)  # type: ignore[call-arg]  # checked by the signature
            else:
                await callback()  # type: ignore[call-arg]  # checked by the signature
        except Exception:
            logger.exception("shutdown callback failed", extra={"job_id": ctx.job.id})


def _watch_pipe(conn: Connection, ctx: JobContext) -> None:
    """Turn a ShutdownJob message, or the worker going away, into ctx.shutdown()."""
    loop = asyncio.get_running_loop()

    def on_readable() -> None:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            ctx.shutdown("worker went away")
            return
        if isinstance(msg, ipc.ShutdownJob):
            ctx.shutdown(msg.reason)

    loop.add_reader(conn.fileno(), on_readable)


async def _run_entrypoint(
    ctx: JobContext, entrypoint: Callable[[JobContext], Awaitable[None]]
) -> str:
    """Run the entrypoint until the job ends; the error text, empty when it succeeded."""

    async def call() -> None:
        await entrypoint(ctx)

    task = asyncio.create_task(call(), name=f"entrypoint-{ctx.job.id}")
    await asyncio.wait([task, ctx._shutdown], return_when=asyncio.FIRST_COMPLETED)
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return ""
    if task.cancelled():
        return "entrypoint was cancelled"
    exc = task.exception()
    if exc is not None:
        logger.error("entrypoint failed", exc_info=exc, extra={"job_id": ctx.job.id})
        return f"{type(exc).__name__}: {exc}"
    if ctx.connected:
        await ctx._shutdown
    return ""


async def _run_job(
    conn: Connection,
    start: ipc.StartJob,
    proc: JobProcess,
    entrypoint: Callable[[JobContext], Awaitable[None]],
    config: ipc.ProcessConfig,
) -> None:
    job = agent_pb.Job()
    job.ParseFromString(start.job)
    ctx = JobContext(
        job=job, proc=proc, url=start.url, token=start.token, worker_id=start.worker_id
    )
    _watch_pipe(conn, ctx)
    conn.send(ipc.JobStarted(job_id=job.id))
    logger.info("job started", extra={"job_id": job.id, "room": job.room.name})
    error = await _run_entrypoint(ctx, entrypoint)
    reason = ctx._shutdown.result() if ctx._shutdown.done() else "entrypoint returned"
    # a little less than the worker allows, so that a job whose callbacks time out still
    # reports how it ended before the worker would kill it
    budget_s = config.shutdown_timeout_s - min(1.0, config.shutdown_timeout_s * 0.2)
    try:
        async with asyncio.timeout(budget_s):
            await _run_callbacks(ctx, reason)
            if ctx._room is not None and ctx.connected:
                await ctx._room.disconnect()
    except TimeoutError:
        logger.warning("shutdown callbacks timed out", extra={"job_id": job.id})
    with contextlib.suppress(OSError):
        loop = asyncio.get_running_loop()
        loop.remove_reader(conn.fileno())
        conn.send(ipc.JobFinished(job_id=job.id, error=error))
    logger.info("job finished", extra={"job_id": job.id, "reason": reason, "error": error})


def process_main(
    conn: Connection,
    config: ipc.ProcessConfig,
    entrypoint: Callable[[JobContext], Awaitable[None]],
    prewarm: Callable[[JobProcess], Any] | None,
) -> None:
    """Body of a pooled process: prewarm, wait for one job, run it, exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when a job ends
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logs.configure(config.log_format, config.log_level)
    proc = JobProcess(pid=os.getpid())
    if prewarm is not None:
        try:
            prewarm(proc)
        except Exception as exc:
            logger.exception("prewarm_fnc failed")
            conn.send(ipc.PrewarmFailed(error=f"{type(exc).__name__}: {exc}"))
            return
    conn.send(ipc.Ready(pid=proc.pid))
    try:
        msg = conn.recv()
    except (EOFError, OSError):
        return
    if isinstance(msg, ipc.StartJob):
        asyncio.run(_run_job(conn, msg, proc, entrypoint, config))
