"""The docs' permissions and server type: a listen-only agent, one per room, named for dispatch.

It may subscribe and send data but publish no media, and leaves once it has said so.
"""

from __future__ import annotations

import logging

from worker_runtime import AgentServer, AgentServerPermissions, JobContext, ServerType, cli

logger = logging.getLogger("examples.server.permissions")

server = AgentServer(
    permissions=AgentServerPermissions(
        can_publish=False,
        can_subscribe=True,
        can_publish_data=True,
        # hidden=True would keep it out of the other participants' view (and from publishing)
        hidden=False,
    ),
)


@server.rtc_session(agent_name="note-taker", type=ServerType.ROOM)
async def my_agent(ctx: JobContext) -> None:
    await ctx.connect()
    granted = ctx.room.local_participant.permissions
    logger.info(
        "granted",
        extra={
            "job_id": ctx.job.id,
            "agent_name": ctx.job.agent_name,
            "can_publish": granted.can_publish,
            "can_subscribe": granted.can_subscribe,
            "can_publish_data": granted.can_publish_data,
        },
    )
    ctx.shutdown(reason="notes taken")


if __name__ == "__main__":
    cli.run_app(server)
