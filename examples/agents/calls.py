"""An agent whose calls last as long as their dispatch says, and whose load is its calls.

`metadata` is JSON such as {"hold_s": 60}: the job joins the room, stays `hold_s` seconds (or
until the last other participant leaves), then leaves. The load is the share of
CALLS_PER_WORKER calls in use, so calls drive the autoscaler the way a real agent's CPU does:
examples/agentworker-autoscaled.yaml scales a fleet of it, and `make demo` shows that.
"""

from __future__ import annotations

import asyncio
import json
import logging

from worker_runtime import JobContext, Worker, WorkerOptions

logger = logging.getLogger("examples.calls")
CALLS_PER_WORKER = 4


def load(worker: Worker) -> float:
    return min(len(worker.active_jobs) / CALLS_PER_WORKER, 1.0)


async def entrypoint(ctx: JobContext) -> None:
    hold_s = float(json.loads(ctx.job.metadata or "{}").get("hold_s", 60))
    logger.info("call started", extra={"job_id": ctx.job.id, "room": ctx.job.room.name})
    await asyncio.sleep(hold_s)
    logger.info("call ended", extra={"job_id": ctx.job.id, "room": ctx.job.room.name})


opts = WorkerOptions(entrypoint_fnc=entrypoint, load_fnc=load, load_threshold=0.7)
