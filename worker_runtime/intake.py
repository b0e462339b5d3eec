"""Job intake: from a job offer to a job running in the pool, or to a failure the server hears of.

Owns the answer to each AvailabilityRequest and the slots the worker holds for offers. Every offer
gets exactly one answer, within ANSWER_WITHIN_S, and a no whenever it cannot be a yes (the worker
is full, draining, retired or reconnecting; request_fnc declines, fails or takes too long; the
answer cannot be built; the worker shuts down; a bug), so that the server offers the job to
another worker instead of waiting out its timeout. Before an offer is decided the load is
measured again; from the decision on, the offer holds a slot until its job runs or it is let go,
so that the next offer of a burst counts it (`load.Occupancy.held_jobs`); while no job's cost was
measured yet, an offer waits up to SETTLE_S for the reading that measures one. Whether the worker
takes an offer is the worker's decision; the intake asks and carries out. It keeps the jobs it
accepted until they run, so that a drain waits for them, a retirement counts them as held, and a
shutdown reports each one that will not run (JS_FAILED with the reason) instead of dropping it.
It sends through a function it is given: it never sees the socket, and the pool never sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from livekit.protocol import agent as agent_pb

from worker_runtime import protocol
from worker_runtime.options import WorkerOptions
from worker_runtime.pool import RunningJob
from worker_runtime.process import ProcessFailed
from worker_runtime.reporter import JobReporter
from worker_runtime.request import ask

ASSIGNMENT_TIMEOUT_S = 7.5
"""How long an accepted job waits for its assignment (livekit-agents)."""
REPORT_TIMEOUT_S = 5.0
"""Bound on waiting, at close, for the accepted jobs that will not run to be reported."""
ANSWER_WITHIN_S = 9.0
"""Every offer is answered this long after it came, at the latest: livekit-server waits 10 s for
the answer (AssignJobTimeout) and then fails the job without offering it to another worker,
while a no in time makes it try the next one. request_fnc gets what is left of it."""
SETTLE_S = 2.0
"""How long an offer waits for the first job's cost to be measured (its assignment is a round
trip and its process prewarmed: normally milliseconds)."""
UNMEASURED = "unmeasured"
"""The refusal while no job's cost was measured: wait for a reading, then ask again."""

Send = Callable[[agent_pb.WorkerMessage], object]


class AssignmentLost(Exception):
    """The assignment of an accepted job will not come; the message says why."""


class Launcher(Protocol):
    """Where accepted jobs run (the process pool)."""

    async def launch(self, running: RunningJob) -> None: ...


@dataclass(slots=True, kw_only=True)
class IntakeHooks:
    """What the intake asks of the worker, which owns the state and the load."""

    refresh_load: Callable[[], Awaitable[None]]
    """Measure the load before an offer is decided; bounded, never raises."""
    offer_refusal: Callable[[bool], str]
    """Why a new offer is declined now, or "": the state's reason, or UNMEASURED; the argument
    says whether the offer already waited SETTLE_S for a measurement."""
    held_offer_refusal: Callable[[], str]
    """Why an offer it holds must still be declined (`state.held_offer_refusal`), or ""."""
    on_held_changed: Callable[[], None]
    """The number of offers held changed: the worker decides its state again."""
    worker_id: Callable[[], str]


class _Reply:
    """The one AvailabilityResponse an offer gets: a yes, or else a no."""

    def __init__(self, job_id: str, send: Send) -> None:
        self._job_id = job_id
        self._send = send
        self.sent = False

    def yes(self, accept: protocol.AcceptArguments) -> None:
        message = protocol.availability(self._job_id, accept)  # bad attributes raise: then no
        self._send(message)
        self.sent = True

    def no(self) -> None:
        if not self.sent:
            self.sent = True
            self._send(protocol.availability(self._job_id, None))


class JobIntake:
    """Answers job offers and takes the accepted jobs to the pool."""

    def __init__(
        self,
        opts: WorkerOptions,
        *,
        pool: Launcher,
        reporter: JobReporter,
        send: Send,
        hooks: IntakeHooks,
        log: logging.LoggerAdapter[logging.Logger],
        answer_within_s: float = ANSWER_WITHIN_S,
        settle_s: float = SETTLE_S,
    ) -> None:
        self._opts = opts
        self._pool = pool
        self._reporter = reporter
        self._send = send
        self._hooks = hooks
        self._log = log
        self._answer_within_s = answer_within_s
        self._settle_s = settle_s
        self._reconsider = asyncio.Event()
        self._answers: set[asyncio.Task[None]] = set()
        self._held: set[str] = set()
        self._assignments: dict[str, asyncio.Future[agent_pb.JobAssignment]] = {}
        self._closed = False

    @property
    def pending(self) -> int:
        """Offers holding a slot: request_fnc deciding, accepted and waiting for the assignment
        or a process, or just started (the slot is let go once the launch returns)."""
        return len(self._held)

    @property
    def held_ids(self) -> frozenset[str]:
        """The job ids of the offers holding a slot (a job that just started may also be
        running: count the two as a union)."""
        return frozenset(self._held)

    def offer(self, req: agent_pb.AvailabilityRequest) -> None:
        """Answer a job offer (in a task of its own: request_fnc may take a while)."""
        if self._closed:  # nobody would wait for the task: say no at once
            _Reply(req.job.id, self._send).no()
            self._log.info("declined a job offer", extra={"job_id": req.job.id, "reason": "closed"})
            return
        task = asyncio.create_task(self._answer(req), name=f"availability-{req.job.id}")
        self._answers.add(task)
        task.add_done_callback(self._answered)

    def _answered(self, task: asyncio.Task[None]) -> None:
        self._answers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error(
                "job offer failed", exc_info=task.exception(), extra={"task": task.get_name()}
            )

    def reconsider(self) -> None:
        """A reading landed or the state moved: offers waiting for a measurement look again."""
        self._reconsider.set()

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

    async def aclose(self, timeout_s: float = REPORT_TIMEOUT_S) -> None:
        """Report every accepted job that will not run; call it once the pool is closed.

        Jobs waiting for a process have failed by then; jobs still waiting for an assignment
        fail now. What is still going after `timeout_s` is cancelled: an offer not answered
        yet is answered no, an accepted job is reported.
        """
        self._closed = True
        self.lose_assignments("the worker shut down")
        await self.wait(timeout_s)
        for task in list(self._answers):
            task.cancel()
        await asyncio.gather(*self._answers, return_exceptions=True)

    async def _answer(self, req: agent_pb.AvailabilityRequest) -> None:
        job = req.job
        extra = {"job_id": job.id, "room": job.room.name}
        self._log.info("job offered", extra=extra)
        reply = _Reply(job.id, self._send)
        deadline = asyncio.get_running_loop().time() + self._answer_within_s
        refusal = "error"  # what the no says if something breaks before an answer
        try:
            refusal = await self._hold(job.id)
            if not refusal:
                try:
                    refusal = await self._consider(job, reply, deadline)
                finally:
                    self._release(job.id)
        except asyncio.CancelledError:
            refusal = "shutdown"
            raise
        except Exception:
            refusal = "error"
            raise
        finally:
            if not reply.sent:
                reply.no()
                self._log.info("declined a job offer", extra=extra | {"reason": refusal})

    async def _hold(self, job_id: str) -> str:
        """Hold a slot for the offer if the worker takes it; why not otherwise.

        The load is measured first; the decision and the slot then follow with no await in
        between, so that the next offer of a burst is decided with this one counted. While no
        job's cost was measured, the offer waits (SETTLE_S at most) for a reading, a move of the
        state or a slot let go, and is decided again.
        """
        loop = asyncio.get_running_loop()
        settled_at = loop.time() + self._settle_s
        await self._hooks.refresh_load()
        while True:
            if job_id in self._held:  # the same job offered twice: one slot, one yes
                return "duplicate"
            waited = loop.time() >= settled_at
            refusal = self._hooks.offer_refusal(waited)
            if refusal != UNMEASURED or waited:
                break
            self._reconsider.clear()  # no await since the decision: nothing was missed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reconsider.wait(), settled_at - loop.time())
        if not refusal:
            self._held.add(job_id)
            self._hooks.on_held_changed()
        return refusal

    def _release(self, job_id: str) -> None:
        self._held.discard(job_id)
        self._hooks.on_held_changed()
        self.reconsider()

    async def _consider(self, job: agent_pb.Job, reply: _Reply, deadline: float) -> str:
        """request_fnc's answer (before `deadline`) and, on yes, the job taken to a process;
        why no, or ""."""
        remaining_s = max(0.0, deadline - asyncio.get_running_loop().time())
        accept = await ask(self._opts.request_fnc, job, self._log, timeout_s=remaining_s)
        if accept is None:
            return "request_fnc"
        refusal = self._hooks.held_offer_refusal()  # it may have stopped serving meanwhile
        if refusal:
            return refusal
        try:
            await self._take(job, accept, reply)
        except asyncio.CancelledError:
            if reply.sent:
                extra = {"job_id": job.id, "room": job.room.name}
                self._log.warning("an accepted job was dropped at shutdown", extra=extra)
                error = "the worker shut down before the job ran"
                self._reporter.never_ran(job.id, "shutdown", error)
            raise
        return ""

    async def _take(
        self, job: agent_pb.Job, accept: protocol.AcceptArguments, reply: _Reply
    ) -> None:
        """Say yes, then wait for the assignment and a process; it runs or is reported failed."""
        fut: asyncio.Future[agent_pb.JobAssignment] = asyncio.get_running_loop().create_future()
        self._assignments[job.id] = fut
        try:
            reply.yes(accept)
            self._log.info("accepted a job offer", extra={"job_id": job.id, "room": job.room.name})
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
            worker_id=self._hooks.worker_id(),
            assigned_at_s=time.monotonic(),
            started_at=time.time(),
        )
        try:
            await self._pool.launch(running)
        except ProcessFailed as exc:
            self._reporter.not_started(job.id, str(exc))
            return
        self._reporter.launched()
