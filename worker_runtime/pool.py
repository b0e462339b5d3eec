"""The process pool: prewarmed idle processes, one job per process, replenished after each job.

Owns which process runs which job, keeping `num_idle_processes` prewarmed, ending jobs on request,
watching their memory (psutil), and reporting each job's start and end through callbacks as plain
values. Process starts are queued, at most one per CPU at a time, so that a burst of jobs waits
its turn instead of timing out; a job waiting for its process counts until it runs or `launch`
fails, and closing the pool fails the waiting ones rather than dropping them. When the fork
server dies, running jobs go on (each process is followed by its own pid) and a new fork server
is started for new ones. It never sees the WebSocket: the worker turns the callbacks into
protocol messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field

import psutil
from livekit.protocol import agent as agent_pb

from worker_runtime import cpu, ipc, process
from worker_runtime.logs import LogFormat
from worker_runtime.options import WorkerOptions
from worker_runtime.process import EndReason, JobOutcome, PooledProcess, ProcessFailed, ProcessSpec

logger = logging.getLogger(__name__)

MEMORY_CHECK_INTERVAL_S = 0.5
RESPAWN_DELAY_S = 1.0
CLOSE_TIMEOUT_S = 15.0
"""Bound on waiting for the pool's own tasks once every process was ended or killed."""
CLOSED_BEFORE_START = "the worker shut down before a process was free for the job"


@dataclass(slots=True, kw_only=True)
class RunningJob:
    """A job the pool runs: the server's job, where to join, and when it was assigned."""

    job: agent_pb.Job
    url: str
    token: str = field(repr=False)
    accept_name: str = ""
    accept_identity: str = ""
    accept_metadata: str = ""
    worker_id: str = ""
    assigned_at_s: float = 0.0
    """Monotonic time of the assignment, for the assignment-to-entrypoint latency."""
    started_at: float = 0.0
    """Wall-clock time (Unix seconds) of the assignment, for /worker."""
    pid: int | None = None
    memory_warned: bool = False
    memory_exceeded: bool = False
    """Over job_memory_limit_mb once: it is being ended, which is done (and logged) once."""


JobStartedCallback = Callable[[RunningJob, float], None]
"""(job, seconds from assignment to the entrypoint being called)."""
JobEndedCallback = Callable[[RunningJob, JobOutcome], None]


class ProcessPool:
    """Keeps processes prewarmed and runs each job in one of them."""

    def __init__(
        self,
        spec: ProcessSpec,
        *,
        num_idle: int,
        memory_warn_mb: float,
        memory_limit_mb: float,
        on_started: JobStartedCallback,
        on_ended: JobEndedCallback,
    ) -> None:
        self._spec = spec
        self._num_idle = num_idle
        self._memory_warn_mb = memory_warn_mb
        self._memory_limit_mb = memory_limit_mb
        self._on_started = on_started
        self._on_ended = on_ended
        self._idle: list[PooledProcess] = []
        self._warming = 0
        self._running: dict[str, tuple[RunningJob, PooledProcess]] = {}
        self._waiting: set[str] = set()
        """Jobs handed to `launch` that wait for a process (a start slot, a prewarm)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._fork_server_restarting = False
        self._starts = asyncio.Semaphore(start_concurrency(cpu.available_cpus()))
        self.jobs_changed = asyncio.Event()

    @classmethod
    def from_options(
        cls,
        opts: WorkerOptions,
        *,
        log_format: LogFormat,
        log_level: str,
        on_started: JobStartedCallback,
        on_ended: JobEndedCallback,
    ) -> ProcessPool:
        """The pool the options describe (processes, prewarm, timeouts, memory limits)."""
        config = ipc.ProcessConfig(
            log_format=log_format,
            log_level=log_level,
            shutdown_timeout_s=opts.shutdown_process_timeout,
        )
        spec = ProcessSpec(
            entrypoint=opts.entrypoint_fnc,
            prewarm=opts.prewarm_fnc,
            config=config,
            initialize_timeout_s=opts.initialize_process_timeout,
            shutdown_timeout_s=opts.shutdown_process_timeout,
            preload=opts.preload_modules,
        )
        return cls(
            spec,
            num_idle=opts.num_idle_processes,
            memory_warn_mb=opts.job_memory_warn_mb,
            memory_limit_mb=opts.job_memory_limit_mb,
            on_started=on_started,
            on_ended=on_ended,
        )

    @property
    def idle_processes(self) -> int:
        return len(self._idle)

    @property
    def running_jobs(self) -> list[RunningJob]:
        return [running for running, _ in self._running.values()]

    def start(self) -> None:
        """Begin prewarming `num_idle` processes and watching job memory.

        The fork server starts with the first process, in a thread: registration never waits.
        """
        process.preload(_modules_of(self._spec))
        self._replenish()
        if self._memory_warn_mb > 0 or self._memory_limit_mb > 0:
            self._spawn_task(self._watch_memory(), "pool-memory")

    def _spawn_task(self, coro: Coroutine[object, object, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "pool task failed", exc_info=task.exception(), extra={"task": task.get_name()}
            )

    def _replenish(self) -> None:
        missing = self._num_idle - len(self._idle) - self._warming
        for _ in range(max(0, missing)):
            if self._closed:
                return
            self._warming += 1
            self._spawn_task(self._warm_one(), "pool-warm")

    async def _start_process(self) -> PooledProcess:
        """A new prewarmed process, once a start slot is free; the timeout runs from then on.

        Once the pool is closed, the starts still queued fail at once.
        """
        proc = PooledProcess(self._spec, on_server_lost=self._fork_server_lost)
        async with self._starts:
            if self._closed:
                raise ProcessFailed(CLOSED_BEFORE_START)
            await proc.start()
        return proc

    def _fork_server_lost(self) -> None:
        """A process saw the fork server die: say so once, and start a new one at once."""
        if self._fork_server_restarting or self._closed:
            return
        self._fork_server_restarting = True
        logger.error(
            "the fork server died; running jobs go on, new ones get a new one",
            extra={"running_jobs": len(self._running), "idle_processes": len(self._idle)},
        )
        self._spawn_task(self._restart_fork_server(), "pool-fork-server")

    async def _restart_fork_server(self) -> None:
        try:  # a failure is logged as a failed pool task; the next process start tries again
            await asyncio.wait_for(
                asyncio.to_thread(process.restart_fork_server), process.SERVER_TIMEOUT_S
            )
        finally:
            self._fork_server_restarting = False
        logger.info("fork server restarted")

    async def _warm_one(self) -> None:
        try:
            proc = await self._start_process()
        except ProcessFailed as exc:
            if self._closed:
                return
            logger.error("job process failed to start", extra={"error": str(exc)})
            await asyncio.sleep(RESPAWN_DELAY_S)  # a prewarm that always fails must not spin
            return
        finally:
            self._warming -= 1
            if not self._closed:
                self._replenish_later()
        if self._closed:
            await proc.kill()
            return
        self._idle.append(proc)
        logger.debug("job process ready", extra={"job_pid": proc.pid})

    def _replenish_later(self) -> None:
        asyncio.get_running_loop().call_soon(self._replenish)

    async def _take_process(self) -> PooledProcess:
        while self._idle:
            proc = self._idle.pop(0)
            if proc.alive:
                return proc
            proc.close()
        return await self._start_process()

    async def launch(self, running: RunningJob) -> None:
        """Run the job in a prewarmed process (or a new one, once a start slot is free).

        `ProcessFailed` when none comes up, or when the pool closed before one did.
        """
        job_id = running.job.id
        if self._closed:
            raise ProcessFailed(CLOSED_BEFORE_START)
        self._waiting.add(job_id)
        try:
            proc = await self._take_process()
        finally:
            self._waiting.discard(job_id)
            self.jobs_changed.set()
        if self._closed:  # it came up as the pool closed: the job is failed, not started
            await proc.kill()
            raise ProcessFailed(CLOSED_BEFORE_START)
        self._replenish()
        running.pid = proc.pid
        self._running[running.job.id] = (running, proc)
        self.jobs_changed.set()
        self._spawn_task(self._supervise(running, proc), f"job-{running.job.id}")

    async def _supervise(self, running: RunningJob, proc: PooledProcess) -> None:
        start = ipc.StartJob(
            job=running.job.SerializeToString(),
            url=running.url,
            token=running.token,
            accept_name=running.accept_name,
            accept_identity=running.accept_identity,
            accept_metadata=running.accept_metadata,
            worker_id=running.worker_id,
        )

        def started() -> None:
            self._on_started(running, time.monotonic() - running.assigned_at_s)

        try:
            outcome = await proc.run(start, running.job.id, started)
        finally:
            self._running.pop(running.job.id, None)
            self.jobs_changed.set()
            proc.close()
        self._on_ended(running, outcome)

    async def terminate(self, job_id: str, reason: str, because: EndReason | None = None) -> bool:
        """Ask one job to end (its shutdown callbacks run, then it is killed if it hangs)."""
        entry = self._running.get(job_id)
        if entry is None:
            return False
        await entry[1].shutdown(reason, because=because)
        return True

    async def _watch_memory(self) -> None:
        while True:
            await asyncio.sleep(MEMORY_CHECK_INTERVAL_S)
            for job_id, (running, proc) in list(self._running.items()):
                if proc.pid is None:
                    continue
                rss_mb = await asyncio.to_thread(_rss_mb, proc.pid)
                self._check_memory(job_id, running, rss_mb)

    def _check_memory(self, job_id: str, running: RunningJob, rss_mb: float) -> None:
        extra = {"job_id": job_id, "rss_mb": round(rss_mb, 1)}
        if running.memory_exceeded:
            return  # being ended already
        if 0 < self._memory_limit_mb < rss_mb:
            running.memory_exceeded = True
            logger.error("job exceeded its memory limit, ending it", extra=extra)
            self._spawn_task(
                self._terminate_quietly(job_id, "memory limit exceeded", EndReason.MEMORY_LIMIT),
                f"memory-limit-{job_id}",
            )
        elif 0 < self._memory_warn_mb < rss_mb and not running.memory_warned:
            running.memory_warned = True
            logger.warning("job is using a lot of memory", extra=extra)

    async def _terminate_quietly(self, job_id: str, reason: str, because: EndReason) -> None:
        await self.terminate(job_id, reason, because)

    async def wait_for_jobs(self, timeout_s: float) -> bool:
        """Wait until no job runs or waits for a process, at most `timeout_s`; whether they did."""
        deadline = time.monotonic() + timeout_s
        while self._running or self._waiting:
            self.jobs_changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.jobs_changed.wait(), remaining)
        return True

    async def aclose(self) -> None:
        """End every job (shutdown callbacks, then kill), stop idle processes; idempotent.

        Jobs still waiting for a process fail (`launch` raises): the queued ones at once, the
        ones whose process is starting when it is up (bounded by initialize_process_timeout).
        """
        self._closed = True
        await asyncio.gather(
            *(proc.shutdown("worker shutting down") for _, proc in list(self._running.values())),
            self._wait_for_launches(),
        )
        await asyncio.gather(*(proc.kill() for proc in self._idle))
        self._idle.clear()
        for task in list(self._tasks):
            if task.get_name() == "pool-memory":  # the others end by themselves, bounded
                task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(list(self._tasks), timeout=CLOSE_TIMEOUT_S)
            for task in stuck:
                logger.error(
                    "pool task did not end, cancelling it", extra={"task": task.get_name()}
                )
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)

    async def _wait_for_launches(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                while self._waiting:
                    self.jobs_changed.clear()
                    await self.jobs_changed.wait()


def start_concurrency(cpus: float) -> int:
    """How many processes may start (fork and prewarm) at once: one per whole CPU, at least 1."""
    return max(1, int(cpus))


def _modules_of(spec: ProcessSpec) -> list[str]:
    """The modules that define the agent's functions, then `preload_modules`, for the fork
    server to import once."""
    names = (getattr(fn, "__module__", None) for fn in (spec.entrypoint, spec.prewarm))
    return [*(name for name in names if isinstance(name, str)), *spec.preload]


def _rss_mb(pid: int) -> float:
    try:
        return float(psutil.Process(pid).memory_info().rss) / (1024 * 1024)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0.0
