"""The seeds' PUBLISHER worker type: one job for each publisher in the room."""

from __future__ import annotations

import logging

from worker_runtime import JobContext, WorkerOptions, WorkerType, cli

logger = logging.getLogger("examples.publisher")


async def entrypoint(ctx: JobContext) -> None:
    publisher = ctx.job.participant
    logger.info(
        "job for publisher",
        extra={"job_id": ctx.job.id, "publisher": publisher.identity, "room": ctx.job.room.name},
    )


opts = WorkerOptions(
    entrypoint_fnc=entrypoint,
    # when omitted, the default is WorkerType.ROOM
    worker_type=WorkerType.PUBLISHER,
)

if __name__ == "__main__":
    cli.run_app(opts)
