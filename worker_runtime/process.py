"""One pooled job process seen from the worker: start, prewarm, take a job, end, be killed.

Owns the life of a single process: it forks it from a fork server (multiprocessing's forkserver
context: a clean interpreter that imported the job side and the agent's module once, so nothing
of the worker's event loop or sockets leaks into a job, and a new process costs a fork rather
than a fresh import), waits for its prewarm within the initialize timeout, hands it one job,
asks it to shut down, and kills it when it does not stop in time. It never sees the WebSocket
to LiveKit; results go to the pool as plain values.

A job process is the fork server's child, not the worker's, and multiprocessing learns of its
exit from the fork server. So the process is followed through a pidfd of its own (Linux 5.3+):
its exit, and the SIGKILL that ends it, do not depend on the fork server. When the fork server
dies the process says so (`on_server_lost`) and carries on; only its exit code may be lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.process
import os
import select
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from worker_runtime import ipc, job

logger = logging.getLogger(__name__)

_MP = multiprocessing.get_context("forkserver")
JOB_MODULES = ("worker_runtime.forkserver", "__main__", "worker_runtime.job")
"""What the fork server imports besides the agent's modules: its own signal set-up, the main
script (as spawn would in every process; only when it was started from a file), the job side."""
SERVER_TIMEOUT_S = 60.0
"""Bound on asking the fork server for a process; the first ask waits for its imports."""
EXIT_CODE_WAIT_S = 1.0
"""Bound on waiting for the fork server to report the exit code of a process that exited."""


def preload(modules: Iterable[str]) -> None:
    """Have the fork server import `modules` (and `JOB_MODULES`) once, before it forks any job.

    Takes effect when the fork server starts, at the first process start (in a thread, so off
    the event loop and the registration path); later calls change nothing for a running server.
    """
    _MP.set_forkserver_preload(list(dict.fromkeys([*JOB_MODULES, *modules])))


def restart_fork_server() -> None:
    """Start a new fork server if the last one died (blocking: run it in a thread).

    multiprocessing would also do it at the next process start; doing it at once keeps the
    imports off the next job's start.
    """
    multiprocessing.forkserver.ensure_running()
    # a fork server whose pipes just closed may not be reapable for a moment yet (it would then
    # pass for alive): look once more
    time.sleep(0.1)
    multiprocessing.forkserver.ensure_running()


class ProcessFailed(RuntimeError):
    """The process did not come up: it crashed, its prewarm raised, or it was too slow."""


class EndReason(enum.Enum):
    """Why a job ended; the metric label and the error reported to the server derive from it."""

    SUCCESS = "success"
    ERROR = "error"
    CRASH = "crash"
    MEMORY_LIMIT = "memory_limit"
    SHUTDOWN_TIMEOUT = "shutdown_timeout"


@dataclass(frozen=True, slots=True, kw_only=True)
class JobOutcome:
    """How a job ended."""

    reason: EndReason
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessSpec:
    """What every process of a pool runs and how long it may take."""

    entrypoint: Callable[[job.JobContext], Awaitable[None]]
    prewarm: Callable[[job.JobProcess], Any] | None
    config: ipc.ProcessConfig
    initialize_timeout_s: float
    shutdown_timeout_s: float
    preload: tuple[str, ...] = ()
    """More modules for the fork server to import once (the `preload_modules` option)."""


class PooledProcess:
    """A forked process; `start()` returns once it is prewarmed, `run()` runs one job."""

    def __init__(self, spec: ProcessSpec, *, on_server_lost: Callable[[], None]) -> None:
        """`on_server_lost` is called when the fork server dies while this process runs."""
        self._spec = spec
        self._on_server_lost = on_server_lost
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._channel: ipc.Channel | None = None
        self._pidfd: int | None = None
        self._server_lost = False
        self._exited: asyncio.Event = asyncio.Event()
        self._finished: ipc.JobFinished | None = None
        self._kill_reason: EndReason | None = None
        self.job_id = ""
        self.pid: int | None = None
        self._released = False
        self._exitcode: int | None = None

    async def start(self) -> None:
        """Fork and prewarm; `ProcessFailed` (and the process killed) when that fails.

        The initialize timeout counts from here: the caller queues starts before calling this.
        """
        parent_end, child_end = _MP.Pipe(duplex=True)
        args = (child_end, self._spec.config, self._spec.entrypoint, self._spec.prewarm)
        proc = _MP.Process(target=job.process_main, args=args, name="agent-job", daemon=False)
        try:
            await asyncio.wait_for(asyncio.to_thread(proc.start), SERVER_TIMEOUT_S)
        except Exception as exc:  # the fork server died or hangs, or the entrypoint won't pickle
            parent_end.close()  # a process that started late anyway reads EOF and exits
            error = f"could not start a job process: {type(exc).__name__}: {exc}"
            raise ProcessFailed(error) from exc
        self._proc = proc
        self.pid = proc.pid
        child_end.close()
        self._channel = ipc.Channel(parent_end)
        self._watch(proc)
        try:
            msg = await asyncio.wait_for(self._channel.recv(), self._spec.initialize_timeout_s)
        except asyncio.CancelledError:
            self._send_kill()  # a start given up leaves no process behind
            raise
        except TimeoutError:
            await self.kill()
            raise ProcessFailed(
                "job process did not finish initializing (prewarm_fnc included) within"
                f" initialize_process_timeout, {self._spec.initialize_timeout_s:g} s"
            ) from None
        if not isinstance(msg, ipc.Ready):
            await self.kill()
            error = msg.error if isinstance(msg, ipc.PrewarmFailed) else "process exited"
            raise ProcessFailed(error)

    def _watch(self, proc: multiprocessing.process.BaseProcess) -> None:
        """Learn of the exit from a pidfd; of the exit code (or its death) from the fork server."""
        loop = asyncio.get_running_loop()
        assert proc.pid is not None
        self._pidfd = _open_pidfd(proc.pid)
        if self._pidfd is not None:
            loop.add_reader(self._pidfd, self._on_exit)
        loop.add_reader(proc.sentinel, self._on_sentinel)

    def _stop_watching(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in (self._pidfd, self._proc.sentinel if self._proc is not None else None):
            if fd is not None:
                with contextlib.suppress(ValueError, OSError):
                    loop.remove_reader(fd)

    def _on_sentinel(self) -> None:
        """The fork server reported the exit code, or closed the sentinel as it died."""
        if self._proc is None or self._released:
            return
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self._proc.sentinel)
        if self._pidfd is None:  # no pidfd: the fork server's word is all there is
            self._reap(EXIT_CODE_WAIT_S)
        elif not _readable(self._pidfd):  # still running: it is the fork server that ended
            self._server_lost = True
            logger.debug("fork server gone, process still running", extra={"job_pid": self.pid})
            self._on_server_lost()

    def _on_exit(self) -> None:
        """The pidfd is readable: the process has exited."""
        if self._pidfd is None or self._released:
            return
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self._pidfd)
        self._reap(EXIT_CODE_WAIT_S)

    def _reap(self, patience_s: float) -> None:
        code = self._exit_code()
        if code is None and not self._server_lost and patience_s > 0:  # not reported yet
            asyncio.get_running_loop().call_later(0.01, self._reap, patience_s - 0.01)
            return
        self._exitcode = code
        self._exited.set()

    def _exit_code(self) -> int | None:
        assert self._proc is not None
        if not self._server_lost:
            return self._proc.exitcode
        # orphaned: when the worker inherited it (it runs as PID 1), it can reap it itself
        if self._pidfd is None or not hasattr(os, "P_PIDFD"):
            return None
        try:
            info = os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED | os.WNOHANG)
        except (ChildProcessError, OSError):
            return None
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    @property
    def alive(self) -> bool:
        return not self._exited.is_set()

    async def run(
        self, start: ipc.StartJob, job_id: str, on_started: Callable[[], None]
    ) -> JobOutcome:
        """Hand over the job and wait until the process has exited; how the job ended."""
        assert self._channel is not None
        self.job_id = job_id
        if not self._channel.send(start):
            await self.kill()
            return JobOutcome(reason=EndReason.CRASH, error="job process was gone")
        while (msg := await self._channel.recv()) is not None:
            if isinstance(msg, ipc.JobStarted):
                on_started()
            elif isinstance(msg, ipc.JobFinished):
                self._finished = msg
        await self._exited.wait()
        return self._outcome()

    def _outcome(self) -> JobOutcome:
        if self._kill_reason is EndReason.MEMORY_LIMIT:
            return JobOutcome(reason=EndReason.MEMORY_LIMIT, error="job memory limit exceeded")
        if self._finished is not None:
            if self._finished.error:
                return JobOutcome(reason=EndReason.ERROR, error=self._finished.error)
            return JobOutcome(reason=EndReason.SUCCESS, error="")
        if self._kill_reason is EndReason.SHUTDOWN_TIMEOUT:
            return JobOutcome(
                reason=EndReason.SHUTDOWN_TIMEOUT, error="job did not shut down in time"
            )
        code = self._exitcode
        if code is None:
            return JobOutcome(reason=EndReason.CRASH, error="job process exited (code unknown)")
        return JobOutcome(reason=EndReason.CRASH, error=f"job process exited with code {code}")

    async def shutdown(self, reason: str, *, because: EndReason | None = None) -> None:
        """Ask the job to end; kill the process if it has not exited after the timeout."""
        if because is not None and self._kill_reason is None:
            self._kill_reason = because
        if self._channel is not None and self.alive:
            self._channel.send(ipc.ShutdownJob(reason=reason))
        try:
            await asyncio.wait_for(self._exited.wait(), self._spec.shutdown_timeout_s)
        except TimeoutError:
            if self._kill_reason is None:
                self._kill_reason = EndReason.SHUTDOWN_TIMEOUT
            logger.warning(
                "job process did not exit in time, killing it", extra={"job_id": self.job_id}
            )
            await self.kill()

    async def kill(self) -> None:
        """SIGKILL the process and wait (bounded) until it is gone; idempotent."""
        if self._proc is None:
            return
        if self.alive:
            self._send_kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exited.wait(), 5.0)
        self.close()

    def _send_kill(self) -> None:
        assert self._proc is not None
        if self._pidfd is not None:  # never a recycled pid, and no fork server needed
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        else:
            with contextlib.suppress(ProcessLookupError, ValueError):
                self._proc.kill()

    def close(self) -> None:
        """Release the pipe, the pidfd and the process object once it has exited."""
        if self._channel is not None:
            self._channel.close()
        if self._proc is not None and not self.alive and not self._released:
            self._released = True
            self._stop_watching()
            if self._pidfd is not None:
                os.close(self._pidfd)
            self._proc.join(timeout=0)
            # still "running" for multiprocessing when the fork server never reported the exit
            with contextlib.suppress(ValueError):
                self._proc.close()


def _open_pidfd(pid: int) -> int | None:
    """A pidfd for `pid`, or None where there is none (not Linux 5.3+, or it already exited)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _readable(fd: int) -> bool:
    readable, _, _ = select.select([fd], [], [], 0)
    return bool(readable)
