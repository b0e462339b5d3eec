"""The seeds' job metadata example: the dispatch's metadata is JSON about the user."""

from __future__ import annotations

import json
import logging

from worker_runtime import JobContext, WorkerOptions, cli

logger = logging.getLogger("examples.metadata")


async def entrypoint(ctx: JobContext) -> None:
    metadata = json.loads(ctx.job.metadata)
    user_id = metadata["user_id"]
    user_name = metadata["user_name"]
    user_phone = metadata["user_phone"]
    logger.info(
        "job metadata",
        extra={
            "job_id": ctx.job.id,
            "user_id": user_id,
            "user_name": user_name,
            "user_phone": user_phone,
        },
    )


if __name__ == "__main__":
    cli.run_app(WorkerOptions(entrypoint_fnc=entrypoint, agent_name="metadata-example"))
