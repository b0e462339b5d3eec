"""The docs' server load: at most 9 concurrent jobs, whatever the CPU does."""

from __future__ import annotations

import asyncio
import logging

from worker_runtime import AgentServer, JobContext, cli

logger = logging.getLogger("examples.server.load")

server = AgentServer(load_threshold=0.9)


def compute_load(agent_server: AgentServer) -> float:
    return min(len(agent_server.active_jobs) / 10, 1.0)


server.load_fnc = compute_load


@server.rtc_session()
async def my_agent(ctx: JobContext) -> None:
    logger.info("job running", extra={"job_id": ctx.job.id})
    await asyncio.sleep(float(ctx.job.metadata or "1"))


if __name__ == "__main__":
    cli.run_app(server)
