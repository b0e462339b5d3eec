"""The docs' entrypoint: handlers on the room before joining, audio only, a hello, who is there."""

from __future__ import annotations

import logging

from livekit import rtc

from worker_runtime import AgentServer, AutoSubscribe, JobContext, cli

logger = logging.getLogger("examples.server.entrypoint")

server = AgentServer()


@server.rtc_session()
async def my_agent(ctx: JobContext) -> None:
    room = ctx.room

    # attached before connecting, so that no subscription is missed
    @room.on("track_subscribed")
    def on_track_subscribed(track: rtc.Track, *_: object) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            logger.info("audio track subscribed", extra={"job_id": ctx.job.id, "track": track.sid})

    await ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
    # once connected, the local participant is the agent
    await room.local_participant.send_text("hello world", topic="hello-world")
    for participant in room.remote_participants.values():
        logger.info(
            "participant in room", extra={"job_id": ctx.job.id, "identity": participant.identity}
        )


if __name__ == "__main__":
    cli.run_app(server)
