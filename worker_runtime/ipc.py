"""Messages between the worker and a job process, and the asyncio side of their pipe.

Owns the message types (small frozen dataclasses, pickled over a multiprocessing Connection) and
`Channel`, which reads a Connection from the event loop without blocking it. Knows nothing of
WebSockets or the LiveKit protocol beyond the job's serialized bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from worker_runtime.logs import LogFormat

# worker -> process


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessConfig:
    """What a new process needs before its prewarm."""

    log_format: LogFormat
    log_level: str
    shutdown_timeout_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class StartJob:
    """Run the entrypoint for this job. `job` is a serialized livekit.protocol.agent.Job."""

    job: bytes
    url: str
    token: str = field(repr=False)
    accept_name: str
    accept_identity: str
    accept_metadata: str
    worker_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ShutdownJob:
    """End the job: cancel the entrypoint, run the shutdown callbacks, exit."""

    reason: str


# process -> worker


@dataclass(frozen=True, slots=True, kw_only=True)
class Ready:
    """The process is up and prewarm_fnc returned."""

    pid: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PrewarmFailed:
    """prewarm_fnc raised; the process exits and the pool replaces it."""

    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class JobStarted:
    """The entrypoint is about to be called."""

    job_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFinished:
    """The job ended; `error` is empty for success."""

    job_id: str
    error: str


ToProcess = StartJob | ShutdownJob
FromProcess = Ready | PrewarmFailed | JobStarted | JobFinished


class Channel:
    """The worker's end of one process's pipe, read from the event loop without blocking."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._queue: asyncio.Queue[FromProcess | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(conn.fileno(), self._on_readable)
        self._closed = False

    def _on_readable(self) -> None:
        try:
            while self._conn.poll():
                msg = self._conn.recv()
                if isinstance(msg, Ready | PrewarmFailed | JobStarted | JobFinished):
                    self._queue.put_nowait(msg)
        except (EOFError, OSError):
            self._stop_reading()
            self._queue.put_nowait(None)

    def _stop_reading(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._conn.fileno())

    async def recv(self) -> FromProcess | None:
        """The next message; None once the process closed its end (it exited or crashed)."""
        return await self._queue.get()

    def send(self, msg: ToProcess) -> bool:
        """Send `msg` (small, so the pipe takes it at once); False when the process is gone."""
        try:
            self._conn.send(msg)
        except (BrokenPipeError, OSError, ValueError):
            return False
        return True

    def close(self) -> None:
        """Stop reading and close the pipe; a pending `recv()` returns None. Idempotent."""
        if not self._closed:
            self._queue.put_nowait(None)
        self._stop_reading()
        with contextlib.suppress(OSError):
            self._conn.close()
