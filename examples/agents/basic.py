"""The seeds' entrypoint: join the room, say hello over data, list who is there."""

from __future__ import annotations

import logging

from worker_runtime import AutoSubscribe, JobContext, WorkerOptions, cli

logger = logging.getLogger("examples.basic")


async def entrypoint(ctx: JobContext) -> None:
    # connect to room
    await ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
    # when connected, room.local_participant represents the agent
    await ctx.room.local_participant.publish_data("hello world")
    # iterate through currently connected remote participants
    for rp in ctx.room.remote_participants.values():
        logger.info("participant in room", extra={"identity": rp.identity, "job_id": ctx.job.id})


if __name__ == "__main__":
    cli.run_app(WorkerOptions(entrypoint_fnc=entrypoint))
