"""An AgentServer for the e2e tests of what the docs' examples do not show: preload_modules,
log_level, and the worker's jobs seen through the server in the request handler.

Started as `agent-worker start tests.e2e.runtime.server_agents:server`.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from worker_runtime import AgentServer, JobContext, JobRequest

logger = logging.getLogger("e2e.server_agent")
PRELOADED = "tests.e2e.runtime.preload_mark"

server = AgentServer(preload_modules=[PRELOADED], log_level="DEBUG")


async def one_at_a_time(req: JobRequest) -> None:
    # runs in the worker's process, where server.active_jobs are the worker's, as in livekit-agents
    logger.info("e2e job offered", extra={"job_id": req.id, "active_jobs": len(server.active_jobs)})
    if server.active_jobs:
        await req.reject()
    else:
        await req.accept()


@server.rtc_session(on_request=one_at_a_time)
async def my_agent(ctx: JobContext) -> None:
    preloaded = PRELOADED in sys.modules
    logger.info("e2e server job", extra={"job_id": ctx.job.id, "preloaded": preloaded})
    await asyncio.sleep(60)  # busy until the test ends
