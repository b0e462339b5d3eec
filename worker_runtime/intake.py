"""Job intake: from a job offer to a job running in the pool, or to a failure the server hears of.

Owns the answer to each AvailabilityRequest (request_fnc, and whether the worker takes jobs at
all), the wait for the assignment, and the hand-over to the pool. It keeps the jobs it accepted
until they run, so that a drain waits for them, a retirement counts them as held, and a shutdown
reports each one that will not run (JS_FAILED with the reason) instead of dropping it. It sends
through a function it is given: it never sees the socket, and the pool never sees it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from livekit.protocol import agent as agent_pb

from worker_runtime import protocol
from worker_runtime.options import WorkerOptions
from worker_runtime.pool import ProcessPool, RunningJob
from worker_runtime.process import ProcessFailed
from worker_runtime.reporter import JobReporter
from worker_runtime.request import ask

ASSIGNMENT_TIMEOUT_S = 7.5
"""How long an accepted job waits for its assignment (livekit-agents)."""
REPORT_TIMEOUT_S = 5.0
"""Bound on waiting, at close, for the accepted jobs that will not run to be reported."""


class AssignmentLost(Exception):
    """The assignment of an accepted job will not come; the message says why."""


class JobIntake:
    """Answers job offers and takes the accepted jobs to the pool."""

    def __init__(
        self,
        opts: WorkerOptions,
        *,
        pool: ProcessPool,
        reporter: JobReporter,
        send: Callable[[agent_pb.WorkerMessage], object],
        takes_jobs: Callable[[], bool],
        worker_id: Callable[[], str],
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        """`takes_jobs` says whether the worker's state lets it take a job now."""
        self._opts = opts
        self._pool = pool
        self._reporter = reporter
        self._send = send
        self._takes_jobs = takes_jobs
        self._worker_id = worker_id
        self._log = log
        self._answers: set[asyncio.Task[None]] = set()
        self._accepted: set[str] = set()
        self._assignments: dict[str, asyncio.Future[agent_pb.JobAssignment]] = {}

    @property
    def pending(self) -> int:
        """Jobs accepted and not running yet (waiting for their assignment or a process)."""
        return len(self._accepted)

    def offer(self, req: agent_pb.AvailabilityRequest) -> None:
        """Answer a job offer (in a task of its own: request_fnc may take a while)."""
        task = asyncio.create_task(self._answer(req), name=f"availability-{req.job.id}")
        self._answers.add(task)
        task.add_done_callback(self._answered)

    def _answered(self, task: asyncio.Task[None]) -> None:
        self._answers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error(
                "job offer failed", exc_info=task.exception(), extra={"task": task.get_name()}
            )

    def assign(self, assignment: agent_pb.JobAssignment) -> None:
        """The server assigned a job this worker accepted."""
        fut = self._assignments.get(assignment.job.id)
        if fut is None or fut.done():
            self._log.warning("assignment for an unknown job", extra={"job_id": assignment.job.id})
        else:
            fut.set_result(assignment)

    def lose_assignments(self, reason: str) -> None:
        """The assignments still awaited will not come (the socket dropped, or the worker
        closes): their jobs are reported failed."""
        for fut in self._assignments.values():
            if not fut.done():
                fut.set_exception(AssignmentLost(reason))

    async def wait(self, timeout_s: float) -> None:
        """Until every offer in progress was answered and its job runs or was reported."""
        if self._answers:
            await asyncio.wait(self._answers, timeout=timeout_s)

    async def aclose(self) -> None:
        """Report every accepted job that will not run; call it once the pool is closed.

        Jobs waiting for a process have failed by then; jobs still waiting for an assignment
        fail now. What is still going after REPORT_TIMEOUT_S is cancelled, and reported too.
        """
        self.lose_assignments("the worker shut down")
        await self.wait(REPORT_TIMEOUT_S)
        for task in list(self._answers):
            task.cancel()
        await asyncio.gather(*self._answers, return_exceptions=True)

    async def _answer(self, req: agent_pb.AvailabilityRequest) -> None:
        job = req.job
        extra = {"job_id": job.id, "room": job.room.name}
        self._log.info("job offered", extra=extra)
        accept = await ask(self._opts.request_fnc, job, self._log) if self._takes_jobs() else None
        if accept is not None and not self._takes_jobs():  # it changed during request_fnc
            accept = None
        if accept is None:
            self._send(protocol.availability(job.id, None))
            return
        self._accepted.add(job.id)
        try:
            await self._take(job, accept)
        except asyncio.CancelledError:
            self._log.warning("an accepted job was dropped at shutdown", extra=extra)
            self._reporter.never_ran(job.id, "shutdown", "the worker shut down before the job ran")
            raise
        finally:
            self._accepted.discard(job.id)

    async def _take(self, job: agent_pb.Job, accept: protocol.AcceptArguments) -> None:
        """An accepted job: its assignment, then a process; it runs or is reported failed."""
        fut: asyncio.Future[agent_pb.JobAssignment] = asyncio.get_running_loop().create_future()
        self._assignments[job.id] = fut
        self._send(protocol.availability(job.id, accept))
        try:
            assignment = await asyncio.wait_for(fut, ASSIGNMENT_TIMEOUT_S)
        except (TimeoutError, AssignmentLost) as exc:
            error = str(exc) or "none came in time"
            self._log.warning(
                "no assignment came for an accepted job",
                extra={"job_id": job.id, "room": job.room.name, "error": error},
            )
            self._reporter.never_ran(job.id, "no_assignment", f"no assignment came: {error}")
            return
        finally:
            self._assignments.pop(job.id, None)
        await self._launch(assignment, accept)

    async def _launch(
        self, assignment: agent_pb.JobAssignment, accept: protocol.AcceptArguments
    ) -> None:
        job = assignment.job
        running = RunningJob(
            job=job,
            url=assignment.url or self._opts.ws_url,
            token=assignment.token,
            accept_name=accept.name,
            accept_identity=accept.identity or protocol.default_identity(job.id),
            accept_metadata=accept.metadata,
            worker_id=self._worker_id(),
            assigned_at_s=time.monotonic(),
            started_at=time.time(),
        )
        try:
            await self._pool.launch(running)
        except ProcessFailed as exc:
            self._reporter.not_started(job.id, str(exc))
            return
        self._reporter.launched()
