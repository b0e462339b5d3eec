"""The docs' request handler: `on_request` accepts each job with a name, identity, attributes."""

from __future__ import annotations

import logging

from worker_runtime import AgentServer, JobContext, JobRequest, cli

logger = logging.getLogger("examples.server.request_handler")


async def request_fnc(req: JobRequest) -> None:
    await req.accept(
        name="agent",  # the participant's display name
        identity=f"greeter-{req.id}",  # default: "agent-<job id>"
        attributes={"myagent": "rocks"},  # set on the participant as it joins
    )
    # `await req.reject()` would leave the job to another server


server = AgentServer()


@server.rtc_session(on_request=request_fnc)
async def my_agent(ctx: JobContext) -> None:
    await ctx.connect()
    me = ctx.room.local_participant
    logger.info(
        "joined as",
        extra={"job_id": ctx.job.id, "identity": me.identity, "attributes": dict(me.attributes)},
    )


if __name__ == "__main__":
    cli.run_app(server)
