"""JobRequest: what request_fnc sees, the one answer it gives, and asking it (`ask`).

Owns the answer's shape and the rules around request_fnc (None accepts; an exception, a timeout
or no answer rejects, with a log line); the intake turns the answer into an AvailabilityResponse.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from livekit.protocol import agent as agent_pb
from livekit.protocol import models as models_pb

from worker_runtime.protocol import AcceptArguments


class JobRequest:
    """A job the server offers; call `accept()` or `reject()` once (no answer rejects)."""

    def __init__(self, job: agent_pb.Job) -> None:
        self._job = job
        self._answer: AcceptArguments | None = None
        self._answered = False

    @property
    def job(self) -> agent_pb.Job:
        return self._job

    @property
    def id(self) -> str:
        return self._job.id

    @property
    def room(self) -> models_pb.Room:
        return self._job.room

    @property
    def publisher(self) -> models_pb.ParticipantInfo | None:
        """The publisher of a PUBLISHER job; None for a ROOM job."""
        return self._job.participant if self._job.HasField("participant") else None

    @property
    def agent_name(self) -> str:
        return self._job.agent_name

    async def accept(
        self,
        *,
        name: str = "",
        identity: str = "",
        metadata: str = "",
        attributes: Mapping[str, str] | None = None,
    ) -> None:
        """Take the job; the agent joins as `identity` (default "agent-<job id>")."""
        if self._answered:
            raise RuntimeError("this job request was already answered")
        self._answered = True
        self._answer = AcceptArguments(
            name=name, identity=identity, metadata=metadata, attributes=dict(attributes or {})
        )

    async def reject(self) -> None:
        """Decline: the server offers the job to another worker."""
        if self._answered:
            raise RuntimeError("this job request was already answered")
        self._answered = True

    @property
    def answered(self) -> bool:
        return self._answered

    @property
    def answer(self) -> AcceptArguments | None:
        """The accept arguments, or None when rejected or not answered."""
        return self._answer


async def ask(
    request_fnc: Callable[[JobRequest], Awaitable[None]] | None,
    job: agent_pb.Job,
    log: logging.LoggerAdapter[logging.Logger],
    *,
    timeout_s: float,
) -> AcceptArguments | None:
    """How to take the job, or None to decline it (also when request_fnc takes over
    `timeout_s`: the server must hear the no in time to offer the job elsewhere)."""
    if request_fnc is None:
        return AcceptArguments()
    req = JobRequest(job)
    extra = {"job_id": job.id, "room": job.room.name}
    bound = asyncio.timeout(timeout_s)
    try:
        async with bound:
            await request_fnc(req)
    except Exception:
        if bound.expired():
            log.warning(
                "request_fnc took too long, rejecting the job",
                extra=extra | {"timeout_s": round(timeout_s, 3)},
            )
        else:
            log.exception("request_fnc failed, rejecting the job", extra=extra)
        return None
    if not req.answered:
        log.warning("request_fnc gave no answer, rejecting the job", extra=extra)
    elif req.answer is None:
        log.info("request_fnc rejected the job", extra=extra)
    return req.answer
