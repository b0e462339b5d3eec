"""The docs' prewarm: `server.setup_fnc` loads a model once per process; each job uses it.

The docs load silero's VAD; this stand-in "model" is a dict so the example needs nothing else.
"""

from __future__ import annotations

import logging
import os

from worker_runtime import AgentServer, JobContext, JobProcess, cli

logger = logging.getLogger("examples.server.prewarm")

server = AgentServer()


def load_vad() -> dict[str, object]:
    return {"name": "stand-in-vad", "loaded_by_pid": os.getpid()}


def prewarm(proc: JobProcess) -> None:
    proc.userdata["vad"] = load_vad()


server.setup_fnc = prewarm


@server.rtc_session()
async def my_agent(ctx: JobContext) -> None:
    vad = ctx.proc.userdata["vad"]
    logger.info(
        "using the prewarmed model",
        extra={
            "job_id": ctx.job.id,
            "model": vad["name"],
            "loaded_by_pid": vad["loaded_by_pid"],
            "job_pid": os.getpid(),
        },
    )


if __name__ == "__main__":
    cli.run_app(server)
