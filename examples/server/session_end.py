"""The docs' job end: metadata in, a shutdown hook, and `on_session_end` for the report.

The dispatch's metadata is JSON about the user; the job ends itself once it has read it.
"""

from __future__ import annotations

import json
import logging

from worker_runtime import AgentServer, JobContext, cli

logger = logging.getLogger("examples.server.session_end")

server = AgentServer(session_end_timeout=30)


async def write_report(ctx: JobContext) -> None:
    logger.info("session report", extra={"job_id": ctx.job.id, "room": ctx.job.room.name})


@server.rtc_session(on_session_end=write_report)
async def my_agent(ctx: JobContext) -> None:
    metadata = json.loads(ctx.job.metadata)

    async def save_user_state() -> None:
        logger.info("saving user state", extra={"job_id": ctx.job.id, "user": metadata["user"]})

    ctx.add_shutdown_callback(save_user_state)
    ctx.shutdown(reason="Session ended")


if __name__ == "__main__":
    cli.run_app(server)
