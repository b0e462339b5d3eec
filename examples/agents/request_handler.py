"""The seeds' request handler: accept each job with a name, an identity and attributes."""

from __future__ import annotations

import logging

from worker_runtime import JobContext, JobRequest, WorkerOptions, cli

logger = logging.getLogger("examples.request_handler")


async def request_fnc(req: JobRequest) -> None:
    # accept the job request
    await req.accept(
        # the agent's name (Participant.name), defaults to ""
        name="agent",
        # the agent's identity (Participant.identity), defaults to "agent-<jobid>"
        identity=f"identity-{req.id}",
        # attributes to set on the agent participant upon join
        attributes={"myagent": "rocks"},
    )
    # or reject it
    # await req.reject()


async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    me = ctx.room.local_participant
    logger.info(
        "joined as",
        extra={"job_id": ctx.job.id, "identity": me.identity, "participant_name": me.name},
    )
    ctx.shutdown(reason="done")


opts = WorkerOptions(entrypoint_fnc=entrypoint, request_fnc=request_fnc)

if __name__ == "__main__":
    cli.run_app(opts)
